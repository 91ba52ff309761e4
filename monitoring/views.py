from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from connectors.models import Connection
from monitoring import health, watch_views


@require_GET
def overview(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    connections = Connection.objects.filter(workspace=access.workspace)
    return render(
        request,
        "monitoring/overview.html",
        {"access": access, "connections": connections, "nav": "overview"},
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
