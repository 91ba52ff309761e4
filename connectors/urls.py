from __future__ import annotations

from django.urls import path

from connectors import views

app_name = "connectors"

urlpatterns = [
    path("w/<slug:ws>/config/connectors/<slug:kind>/setup/", views.setup_guide, name="setup"),
    path("w/<slug:ws>/config/connections/", views.connection_list, name="list"),
    path("w/<slug:ws>/config/connections/new/<slug:kind>/", views.connection_create, name="create"),
    path("w/<slug:ws>/config/connections/<int:pk>/", views.connection_detail, name="detail"),
    path("w/<slug:ws>/config/connections/<int:pk>/edit/", views.connection_edit, name="edit"),
    path("w/<slug:ws>/config/connections/<int:pk>/test/", views.connection_test, name="test"),
    path(
        "w/<slug:ws>/config/connections/<int:pk>/rotate-token/",
        views.connection_rotate_token,
        name="rotate-token",
    ),
]
