from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from connectors.models import Connection
from exceptions_inbox.models import ExceptionGroup
from monitoring.models import Flow, SourceEvent
from monitoring.watch import flow_health, health
from monitoring.watch import views as watch_views


@require_GET
def overview(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    """The dashboard: what needs a person, how each flow is doing, and today's events."""
    access = get_workspace_for_user(request, ws)
    workspace = access.workspace
    since = timezone.now() - timedelta(hours=24)
    open_groups = ExceptionGroup.objects.filter(
        workspace=workspace,
        state__in=(ExceptionGroup.State.OPEN, ExceptionGroup.State.ACKNOWLEDGED),
    )
    by_team = open_groups.values("team__slug", "team__name").annotate(n=Count("pk")).order_by("-n")
    events = dict(
        SourceEvent.objects.filter(workspace=workspace, received_at__gte=since)
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    flows = list(Flow.objects.filter(workspace=workspace).select_related("source", "destination"))
    return render(
        request,
        "monitoring/overview.html",
        {
            "access": access,
            "nav": "overview",
            "connections": Connection.objects.filter(workspace=workspace),
            "open_total": open_groups.count(),
            "regressions": open_groups.filter(is_regression=True).count(),
            "mine": open_groups.filter(assignee=request.user).count(),
            "by_team": by_team,
            "events_total": sum(events.values()),
            "events": [
                (label, value, events.get(value, 0)) for value, label in SourceEvent.State.choices
            ],
            "health": flow_health.flow_health(flows) if flows else [],
        },
    )


@require_GET
def flows(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    return watch_views.flows(request, ws)


@require_GET
def events(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    return watch_views.events(request, ws)


@require_GET
def configuration(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    connections = Connection.objects.filter(workspace=access.workspace)
    return render(
        request,
        "monitoring/configuration.html",
        {"access": access, "connections": connections, "nav": "config"},
    )


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    ok, body = health.healthz()
    return JsonResponse(body, status=200 if ok else 503)
