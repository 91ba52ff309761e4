from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest


@require_GET
def inbox(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    return render(request, "exceptions_inbox/inbox.html", {"access": access, "nav": "inbox"})
