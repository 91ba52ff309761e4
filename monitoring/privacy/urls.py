from __future__ import annotations

from django.urls import path

from monitoring.privacy import views as reliability_views

app_name = "reliability"

urlpatterns = [
    path("w/<slug:ws>/config/privacy/", reliability_views.privacy, name="privacy"),
]
