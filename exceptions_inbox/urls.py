from __future__ import annotations

from django.urls import path

from exceptions_inbox import views

app_name = "exceptions_inbox"

urlpatterns = [
    path("inbox/", views.all_inboxes, name="all"),
    path("inbox/bulk/", views.all_bulk, name="all-bulk"),
    path("w/<slug:ws>/inbox/", views.inbox, name="inbox"),
    path("w/<slug:ws>/inbox/bulk/", views.bulk, name="bulk"),
    path("w/<slug:ws>/inbox/<int:pk>/", views.group_detail, name="group"),
    path("w/<slug:ws>/inbox/<int:pk>/action/", views.group_action, name="group-action"),
    path("w/<slug:ws>/inbox/<int:pk>/comment/", views.group_comment, name="group-comment"),
    path("w/<slug:ws>/inbox/<int:pk>/fix/", views.group_fix, name="group-fix"),
]
