"""A workspace's periodic jobs (polling a source, reconciling, writing opt-outs back, the inbox
digests, ...): when each runs, on or off; each is mirrored into the beat scheduler."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import audit
from accounts.access import get_object_for_user, get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from monitoring.configuration import schedule_words, services
from monitoring.configuration.forms import (
    TASKS,
    ScheduleForm,
)
from monitoring.configuration.views.common import context, read_only
from monitoring.models import Schedule
from monitoring.pipeline import flows as engine_flows


@require_http_methods(["GET", "POST"])
def schedule_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    form = ScheduleForm(access.workspace) if access.is_admin else None
    status = 200
    if request.method == "POST":
        access.require_admin()
        form = ScheduleForm(access.workspace, request.POST)
        if form.is_valid():
            with transaction.atomic():
                schedule = form.save()
                engine_flows.mirror_schedule(schedule)
                audit.record_change(
                    access.workspace,
                    request.user,
                    schedule,
                    ConfigChange.Action.CREATED,
                    None,
                    audit.snapshot(schedule, services.SCHEDULE_FIELDS),
                )
            messages.success(request, f"{schedule.name} scheduled.")
            return redirect("config:schedules", ws=ws)
        status = 400
    schedules = Schedule.objects.filter(workspace=access.workspace).select_related("flow")
    return render(
        request,
        "monitoring/config/schedules.html",
        context(
            access,
            schedules=sorted(
                (schedule_words.describe(s) for s in schedules), key=lambda w: w.title.casefold()
            ),
            form=form,
            tasks=TASKS,
        ),
        status=status,
    )


@require_http_methods(["GET", "POST"])
def schedule_edit(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    schedule, access = get_object_for_user(request, Schedule, ws, pk=pk)
    form = read_only(ScheduleForm(access.workspace, instance=schedule), access)
    status = 200
    if request.method == "POST":
        access.require_admin()
        before = audit.snapshot(schedule, services.SCHEDULE_FIELDS)
        form = ScheduleForm(access.workspace, request.POST, instance=schedule)
        if form.is_valid():
            with transaction.atomic():
                schedule = form.save()
                engine_flows.mirror_schedule(schedule)
                audit.record_change(
                    access.workspace,
                    request.user,
                    schedule,
                    ConfigChange.Action.CHANGED,
                    before,
                    audit.snapshot(schedule, services.SCHEDULE_FIELDS),
                )
            messages.success(request, f"{schedule.name} saved.")
            return redirect("config:schedules", ws=ws)
        status = 400
    return render(
        request,
        "monitoring/config/schedule.html",
        context(
            access,
            schedule=schedule,
            words=schedule_words.describe(schedule),
            form=form,
            changes=audit.history_of(schedule)[:30],
        ),
        status=status,
    )


@require_POST
def schedule_toggle(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    schedule, access = get_object_for_user(request, Schedule, ws, pk=pk)
    access.require_admin()
    before = audit.snapshot(schedule, ["enabled"])
    with transaction.atomic():
        schedule.enabled = not schedule.enabled
        schedule.save(update_fields=["enabled"])
        engine_flows.mirror_schedule(schedule)
        audit.record_change(
            access.workspace,
            request.user,
            schedule,
            ConfigChange.Action.CHANGED,
            before,
            audit.snapshot(schedule, ["enabled"]),
        )
    messages.success(request, f"{schedule.name} {'enabled' if schedule.enabled else 'disabled'}.")
    return redirect("config:schedules", ws=ws)


@require_POST
def schedule_delete(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    schedule, access = get_object_for_user(request, Schedule, ws, pk=pk)
    access.require_admin()
    with transaction.atomic():
        audit.record_change(
            access.workspace,
            request.user,
            schedule,
            ConfigChange.Action.DELETED,
            audit.snapshot(schedule, services.SCHEDULE_FIELDS),
            None,
        )
        engine_flows.remove_schedule(schedule)
    messages.success(request, "Schedule removed.")
    return redirect("config:schedules", ws=ws)
