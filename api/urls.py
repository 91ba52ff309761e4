from __future__ import annotations

from django.urls import path

from api import views

app_name = "api"

urlpatterns = [
    path("w/<slug:ws>/config/api-keys/", views.key_list, name="keys"),
    path("w/<slug:ws>/config/api-keys/<int:pk>/revoke/", views.key_revoke, name="key-revoke"),
]
