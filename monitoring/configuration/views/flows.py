"""The flow pages: the list, a flow's settings with its watch (thresholds, trading hours,
reconciliation), creating and deleting a flow, and marking its backfill done."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.access import get_object_for_user, get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from monitoring.configuration import services
from monitoring.configuration.forms import (
    FlowForm,
    WatchForm,
)
from monitoring.configuration.views.common import context, read_only
from monitoring.models import Flow, FlowWatch, Schedule
from monitoring.pipeline import flows as engine_flows

logger = logging.getLogger(__name__)

# What a flow's audit rows record: the form's fields, the source aside (chosen once, at creation).
FLOW_FIELDS = [name for name in FlowForm.Meta.fields if name != "source"]
WATCH_FIELDS = [
    "enabled",
    "stalled_grace_minutes",
    "trading_days",
    "trading_start",
    "trading_end",
    "trading_timezone",
    "lag_for_minutes",
    "escalate_after_minutes",
    "owning_team",
    "webhook_url",
    "reconcile_sample",
    "reconcile_source_days",
]
WATCH_SECRETS = ("webhook_url",)  # a Slack webhook URL carries its token
BACKFILL_FIELDS = ["backfill_state", "backfill_completed_at", "backfill_completed_by"]


@require_GET
def flow_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    flows = Flow.objects.filter(workspace=access.workspace).select_related("source", "destination")
    return render(request, "monitoring/config/flows.html", context(access, flows=flows))


@require_http_methods(["GET", "POST"])
def flow_create(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    form = FlowForm(access.workspace, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            flow = form.save()
            engine_flows.install_defaults(flow)
            audit.record_change(
                access.workspace,
                request.user,
                flow,
                ConfigChange.Action.CREATED,
                None,
                audit.snapshot(flow, ["source", *FLOW_FIELDS]),
            )
        logger.info("Flow %s created by %s", flow.pk, request.user.pk)
        messages.success(request, f"{flow.name} created with the default field mappings.")
        return redirect("config:flow", ws=ws, pk=flow.pk)
    status = 400 if form.errors else 200
    return render(
        request, "monitoring/config/flow_form.html", context(access, form=form), status=status
    )


@require_http_methods(["GET", "POST"])
def flow_detail(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """A flow's thresholds and policies, its alerting, backfill and catalogue, and its history."""
    flow, access = get_object_for_user(
        request, Flow.objects.select_related("source", "destination"), ws, pk=pk
    )
    watch = FlowWatch.for_flow(flow)
    form = FlowForm(access.workspace, instance=flow)
    watch_form = WatchForm(access.workspace, instance=watch, initial={"webhook_url": ""})
    status = 200
    if request.method == "POST":
        access.require_admin()
        which = request.POST.get("form")
        if which == "watch":
            before = audit.snapshot(watch, WATCH_FIELDS, secret_fields=WATCH_SECRETS)
            watch_form = WatchForm(access.workspace, request.POST, instance=watch)
            if watch_form.is_valid():
                watch = watch_form.save()
                audit.record_change(
                    access.workspace,
                    request.user,
                    flow,
                    ConfigChange.Action.CHANGED,
                    before,
                    audit.snapshot(watch, WATCH_FIELDS, secret_fields=WATCH_SECRETS),
                    secret_fields=WATCH_SECRETS,
                    note="Alerting",
                )
                messages.success(request, "Alerting saved.")
                return redirect("config:flow", ws=ws, pk=flow.pk)
        else:
            before = audit.snapshot(flow, FLOW_FIELDS)
            form = FlowForm(access.workspace, request.POST, instance=flow)
            if form.is_valid():
                flow = form.save()
                audit.record_change(
                    access.workspace,
                    request.user,
                    flow,
                    ConfigChange.Action.CHANGED,
                    before,
                    audit.snapshot(flow, FLOW_FIELDS),
                )
                messages.success(request, "Settings saved.")
                return redirect("config:flow", ws=ws, pk=flow.pk)
        status = 400
    return render(
        request,
        "monitoring/config/flow.html",
        context(
            access,
            flow=flow,
            watch=watch,
            form=read_only(form, access),
            watch_form=read_only(watch_form, access),
            schedules=Schedule.objects.filter(flow=flow).order_by("name"),
            changes=audit.history_of(flow)[:50],
        ),
        status=status,
    )


@require_POST
def flow_delete(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    flow, access = get_object_for_user(request, Flow, ws, pk=pk)
    access.require_admin()
    name = flow.name
    services.delete_flow(flow, request.user)
    logger.info("Flow %s deleted by %s", pk, request.user.pk)
    messages.success(request, f"{name} deleted, with its schedules.")
    return redirect("config:flows", ws=ws)


@require_POST
def flow_backfill(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """Start a flow's backfill, or mark it complete (a push-only source: its history is in)."""
    flow, access = get_object_for_user(request, Flow, ws, pk=pk)
    access.require_admin()
    action = request.POST.get("action")
    before = audit.snapshot(flow, BACKFILL_FIELDS)
    if action == "start":
        engine_flows.start_backfill(flow)
        note = "Backfill started."
    elif action == "complete":
        counts = engine_flows.mark_backfill_complete(flow, by=request.user.get_username())
        note = "Backfill marked complete: " + (
            ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "no backfilled events"
        )
    else:
        raise Http404("No such action")
    audit.record_change(
        access.workspace,
        request.user,
        flow,
        ConfigChange.Action.CHANGED,
        before,
        audit.snapshot(flow, BACKFILL_FIELDS),
        note=note,
    )
    messages.success(request, note)
    return redirect("config:flow", ws=ws, pk=flow.pk)
