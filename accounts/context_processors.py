from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from accounts.access import workspaces_for


def workspaces(request: HttpRequest) -> dict[str, Any]:
    """The signed-in user's workspaces for the switcher, and the one in the URL, if any."""
    if not request.user.is_authenticated:
        return {}
    match = getattr(request, "resolver_match", None)
    slug = match.kwargs.get("ws") if match else None
    mine = list(workspaces_for(request.user))
    current = next((w for w in mine if w.slug == slug), None)
    return {"my_workspaces": mine, "current_workspace": current}
