"""Which team each kind of exception goes to, and the runbook that explains each kind."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.access import get_object_for_user, get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from exceptions_inbox.kinds import KINDS
from exceptions_inbox.models import RoutingRule
from monitoring.configuration import services
from monitoring.configuration.forms import (
    RoutingForm,
)
from monitoring.configuration.views.common import context
from monitoring.models import Flow


@require_http_methods(["GET", "POST"])
def routing(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    form = RoutingForm(access.workspace) if access.is_admin else None
    status = 200
    if request.method == "POST":
        access.require_admin()
        form = RoutingForm(access.workspace, request.POST)
        if form.is_valid():
            with transaction.atomic():
                rule, before = form.save()
                audit.record_change(
                    access.workspace,
                    request.user,
                    rule,
                    ConfigChange.Action.CHANGED if before else ConfigChange.Action.CREATED,
                    before,
                    {"team": str(rule.team)},
                )
            messages.success(request, f"{rule} saved.")
            return redirect("config:routing", ws=ws)
        status = 400
    rules = RoutingRule.objects.filter(workspace=access.workspace).select_related("team")
    flows = {f.key: f.name for f in Flow.objects.filter(workspace=access.workspace)}
    return render(
        request,
        "monitoring/config/routing.html",
        context(
            access,
            table=services.routing_table(access.workspace),
            rules=[
                (
                    r,
                    KINDS[r.kind].title if r.kind in KINDS else r.kind,
                    flows.get(r.flow_key, r.flow_key),
                )
                for r in rules.order_by("kind", "flow_key")
            ],
            form=form,
            changes=ConfigChange.objects.filter(
                workspace=access.workspace, object_type="exceptions_inbox.routingrule"
            ).select_related("actor")[:30],
        ),
        status=status,
    )


@require_POST
def routing_delete(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    rule, access = get_object_for_user(
        request, RoutingRule.objects.select_related("team"), ws, pk=pk
    )
    access.require_admin()
    with transaction.atomic():
        audit.record_change(
            access.workspace,
            request.user,
            rule,
            ConfigChange.Action.DELETED,
            {"team": str(rule.team)},
            None,
        )
        rule.delete()
    messages.success(request, "Rule removed: the kind's default team owns it again.")
    return redirect("config:routing", ws=ws)


@require_GET
def runbook(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    return render(
        request,
        "monitoring/config/runbook.html",
        context(
            access,
            teams=services.runbook(access.workspace),
            kinds=sorted(KINDS.values(), key=lambda k: k.title),
            daily=services.DAILY_CHECKS,
        ),
    )
