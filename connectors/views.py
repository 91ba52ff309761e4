from __future__ import annotations

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import select_template
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from connectors.models import Connection


@require_GET
def setup_guide(request: AuthenticatedHttpRequest, ws: str, kind: str) -> HttpResponse:
    """What an admin configures in the source system for this kind of connection."""
    access = get_workspace_for_user(request, ws)
    if kind not in Connection.Kind.values:
        raise Http404("No such connector")
    template = select_template([f"connectors/setup/{kind}.html", "connectors/setup/_generic.html"])
    connections = Connection.objects.filter(workspace=access.workspace, kind=kind)
    return render(
        request,
        template.template.name,
        {
            "access": access,
            "nav": "config",
            "kind": kind,
            "kind_label": Connection.Kind(kind).label,
            "connections": connections,
            "webhook_example": request.build_absolute_uri(
                reverse("monitoring:webhook", kwargs={"token": "<your-connection-token>"})
            )
            if _has_webhook_url()
            else "",
        },
    )


def _has_webhook_url() -> bool:
    from django.urls import NoReverseMatch

    try:
        reverse("monitoring:webhook", kwargs={"token": "x"})
    except NoReverseMatch:
        return False
    return True
