from __future__ import annotations

from django.urls import path

from exceptions_inbox import views

app_name = "exceptions_inbox"

urlpatterns = [
    path("w/<slug:ws>/inbox/", views.inbox, name="inbox"),
]
