from __future__ import annotations

from django.urls import path

from outbound import views

app_name = "outbound"

urlpatterns = [
    path("w/<slug:ws>/config/webhooks/", views.subscription_list, name="list"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/", views.subscription_detail, name="detail"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/edit/", views.subscription_edit, name="edit"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/pause/", views.subscription_pause, name="pause"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/resume/", views.subscription_resume, name="resume"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/delete/", views.subscription_delete, name="delete"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/test/", views.subscription_test, name="test"),
    path("w/<slug:ws>/config/webhooks/<int:pk>/secret/", views.subscription_secret, name="secret"),
]
