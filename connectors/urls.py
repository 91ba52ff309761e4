from __future__ import annotations

from django.urls import path

from connectors import views

app_name = "connectors"

urlpatterns = [
    path("w/<slug:ws>/config/connectors/<slug:kind>/setup/", views.setup_guide, name="setup"),
]
