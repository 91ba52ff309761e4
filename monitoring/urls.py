from __future__ import annotations

from django.urls import path

from monitoring import views, webhooks

app_name = "monitoring"

urlpatterns = [
    path("w/<slug:ws>/", views.overview, name="overview"),
    path("w/<slug:ws>/flows/", views.flows, name="flows"),
    path("w/<slug:ws>/events/", views.events, name="events"),
    path("w/<slug:ws>/config/", views.configuration, name="configuration"),
    path("hooks/", webhooks.receive_bearer, name="webhook-bearer"),
    path("hooks/<str:token>/", webhooks.receive, name="webhook"),
    path("hooks/<str:token>/control/", webhooks.control, name="webhook-control"),
]
