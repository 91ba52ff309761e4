from __future__ import annotations

from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("w/<slug:ws>/config/teams/", views.teams, name="teams"),
    path("w/<slug:ws>/config/audit/", views.audit_log, name="audit"),
]
