"""Configuration pages of the engine: flows (thresholds and policies, backfill and catalogue), field
mappings with the dry run, SKU aliases (CSV import and export), schedules, lists and programs,
routing of exception kinds to teams, and the runbook.

Everyone in the workspace reads them; only admins change anything (`require_admin`: 403). Every
change writes an audit row (`accounts.audit.record_change`) shown on the object's page and on the
audit page.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.access import WorkspaceAccess, get_object_for_user, get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from connectors.dotdigital.errors import ConnectorError, DotDigitalError
from connectors.models import Connection
from exceptions_inbox.kinds import KINDS
from exceptions_inbox.models import RoutingRule
from monitoring.configuration import services
from monitoring.configuration.forms import (
    TASKS,
    AliasForm,
    AliasImportForm,
    CreateDataFieldForm,
    DryRunForm,
    EnrolmentForm,
    FlowForm,
    FlowListsForm,
    MappingForm,
    RoutingForm,
    ScheduleForm,
    SkuCleaningForm,
    WatchForm,
)
from monitoring.models import DirectEnrolment, FieldMapping, Flow, FlowWatch, Schedule, SkuAlias
from monitoring.pipeline import flows as engine_flows
from monitoring.pipeline.mapping import list_rules

logger = logging.getLogger(__name__)

FLOW_FIELDS = [
    "name",
    "destination",
    "is_active",
    "guest_policy",
    "join_key",
    "hold_orphans",
    "orphan_hold_seconds",
    "hold_dispatch_for_scan",
    "scan_hold_seconds",
    "lag_threshold_seconds",
    "masters_products",
    "sku_case_sensitive",
    "payload_retention_days",
]
LIST_FIELDS = [
    "dispatched_list",
    "dispatched_keep_hours",
    "recent_buyers_list",
    "recent_buyer_days",
    "back_in_stock_list",
]
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
ENROLMENT_FIELDS = ["program_id", "event_type", "enabled"]


def _ctx(access: WorkspaceAccess, **extra: Any) -> dict[str, Any]:
    return {"access": access, "nav": "config", **extra}


def _read_only(form: Any, access: WorkspaceAccess) -> Any:
    """Non-admins see the settings, not a form they could send."""
    if not access.is_admin:
        for field in form.fields.values():
            field.disabled = True
    return form


# -- flows -----------------------------------------------------------------------------------


@require_GET
def flow_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    flows = Flow.objects.filter(workspace=access.workspace).select_related("source", "destination")
    return render(request, "monitoring/config/flows.html", _ctx(access, flows=flows))


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
        request, "monitoring/config/flow_form.html", _ctx(access, form=form), status=status
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
        _ctx(
            access,
            flow=flow,
            watch=watch,
            form=_read_only(form, access),
            watch_form=_read_only(watch_form, access),
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


# -- field mappings and the dry run ----------------------------------------------------------


def _mapping_page(
    request: AuthenticatedHttpRequest,
    access: WorkspaceAccess,
    flow: Flow,
    account: services.AccountFields,
    *,
    form: MappingForm | None,
    dry_form: DryRunForm | None = None,
    result: services.DryRunResult | None = None,
    mapping: FieldMapping | None = None,
    status: int = 200,
) -> HttpResponse:
    mappings = list(flow.field_mappings.order_by("target"))
    fields = account.fields()
    rows = [
        (
            m,
            (fields or {}).get(m.target.upper()),
            account.type_problem(m.target, m.type) if fields is not None else None,
        )
        for m in mappings
    ]
    ctx = _ctx(
        access,
        flow=flow,
        rows=rows,
        account_error=account.error,
        account_fields=sorted((fields or {}).values(), key=lambda f: f.name),
        form=form,
        dry_form=dry_form,
        result=result,
        mapping=mapping,
        changes=audit.history_of(mapping)[:30] if mapping else [],
    )
    if request.htmx and result is not None:
        return render(request, "monitoring/config/mappings.html#dry-run", ctx, status=status)
    return render(request, "monitoring/config/mappings.html", ctx, status=status)


@require_http_methods(["GET", "POST"])
def mapping_list(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """The flow's mappings; an admin adds one here (or dry-runs it first: action=dry_run)."""
    flow, access = get_object_for_user(
        request, Flow.objects.select_related("destination"), ws, pk=pk
    )
    return _mapping_form(request, access, flow, FieldMapping(flow=flow))


@require_http_methods(["GET", "POST"])
def mapping_edit(request: AuthenticatedHttpRequest, ws: str, pk: int, mapping: int) -> HttpResponse:
    flow, access = get_object_for_user(
        request, Flow.objects.select_related("destination"), ws, pk=pk
    )
    instance = get_object_or_404(FieldMapping, flow=flow, pk=mapping)
    return _mapping_form(request, access, flow, instance)


def _mapping_form(
    request: AuthenticatedHttpRequest, access: WorkspaceAccess, flow: Flow, instance: FieldMapping
) -> HttpResponse:
    account = services.AccountFields(flow.destination)
    events = list(services.recent_events(flow))
    existing = instance if instance.pk else None
    if request.method != "POST":
        form = MappingForm(flow, account, instance=instance) if access.is_admin else None
        dry = DryRunForm(flow, events) if access.is_admin else None
        return _mapping_page(
            request, access, flow, account, form=form, dry_form=dry, mapping=existing
        )
    access.require_admin()
    before = audit.snapshot(instance, services.MAPPING_FIELDS) if instance.pk else None
    form = MappingForm(flow, account, request.POST, instance=instance)
    dry = DryRunForm(
        flow, events, request.POST if request.POST.get("action") == "dry_run" else None
    )
    if request.POST.get("action") == "dry_run":
        # The draft, as typed, planned by delivery's own code; nothing is saved.
        valid = form.is_valid() and dry.is_valid()
        result = None
        if valid:
            draft = form.save(commit=False)
            pk_before = draft.pk
            result = services.dry_run(
                flow,
                event=dry.cleaned_data.get("event"),
                pasted=dry.cleaned_data.get("pasted"),
                draft=draft,
            )
            draft.pk = pk_before
            draft._state.adding = pk_before is None
        return _mapping_page(
            request,
            access,
            flow,
            account,
            form=form,
            dry_form=dry,
            result=result,
            mapping=existing,
            status=200 if valid else 400,
        )
    if form.is_valid():
        with transaction.atomic():
            saved = form.save()
            audit.record_change(
                access.workspace,
                request.user,
                saved,
                ConfigChange.Action.CHANGED if before else ConfigChange.Action.CREATED,
                before,
                audit.snapshot(saved, services.MAPPING_FIELDS),
                note=f"Flow {flow.name}",
            )
        messages.success(request, f"{saved} saved.")
        return redirect("config:mappings", ws=access.workspace.slug, pk=flow.pk)
    return _mapping_page(
        request, access, flow, account, form=form, dry_form=dry, mapping=existing, status=400
    )


@require_POST
def mapping_delete(
    request: AuthenticatedHttpRequest, ws: str, pk: int, mapping: int
) -> HttpResponse:
    flow, access = get_object_for_user(request, Flow, ws, pk=pk)
    access.require_admin()
    instance = get_object_or_404(FieldMapping, flow=flow, pk=mapping)
    with transaction.atomic():
        audit.record_change(
            access.workspace,
            request.user,
            instance,
            ConfigChange.Action.DELETED,
            audit.snapshot(instance, services.MAPPING_FIELDS),
            None,
            note=f"Flow {flow.name}",
        )
        instance.delete()
    messages.success(request, "Mapping removed.")
    return redirect("config:mappings", ws=ws, pk=flow.pk)


@require_POST
def mapping_create_field(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """Create a data field missing from the DotDigital account (for a mapping to write)."""
    flow, access = get_object_for_user(
        request, Flow.objects.select_related("destination"), ws, pk=pk
    )
    access.require_admin()
    form = CreateDataFieldForm(request.POST)
    account = services.AccountFields(flow.destination)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errs in form.errors.values() for e in errs))
        return redirect("config:mappings", ws=ws, pk=flow.pk)
    try:
        created = account.create(form.cleaned_data["name"], form.cleaned_data["type"])
    except (DotDigitalError, ConnectorError) as exc:
        messages.error(request, f"DotDigital did not create {form.cleaned_data['name']}: {exc}")
        return redirect("config:mappings", ws=ws, pk=flow.pk)
    audit.record_change(
        access.workspace,
        request.user,
        f"DotDigital data field {created.name}",
        ConfigChange.Action.CREATED,
        None,
        {"name": created.name, "type": created.type},
        note=f"In the account of {flow.destination}",
        object_type=services.DOTDIGITAL_FIELD,
        object_id=flow.pk,
    )
    messages.success(request, f"{created.name} ({created.type}) created in DotDigital.")
    return redirect("config:mappings", ws=ws, pk=flow.pk)


@require_http_methods(["GET", "POST"])
def dry_run(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """The operations delivery would send for an event with the flow's mappings as saved."""
    flow, access = get_object_for_user(
        request, Flow.objects.select_related("destination"), ws, pk=pk
    )
    events = list(services.recent_events(flow))
    form = DryRunForm(flow, events, request.POST if request.method == "POST" else None)
    result = None
    status = 200
    if request.method == "POST":
        access.require_admin()
        if form.is_valid():
            result = services.dry_run(
                flow, event=form.cleaned_data.get("event"), pasted=form.cleaned_data.get("pasted")
            )
        else:
            status = 400
    template = "monitoring/config/dry_run.html"
    if request.htmx and result is not None:
        template += "#dry-run"
    return render(
        request,
        template,
        _ctx(access, flow=flow, dry_form=form, result=result, events=events),
        status=status,
    )


# -- SKU aliases -----------------------------------------------------------------------------


def _alias_page(
    request: AuthenticatedHttpRequest,
    access: WorkspaceAccess,
    form: AliasForm | None = None,
    import_form: AliasImportForm | None = None,
    imported: services.ImportResult | None = None,
    cleaning_form: SkuCleaningForm | None = None,
    status: int = 200,
) -> HttpResponse:
    aliases = SkuAlias.objects.filter(workspace=access.workspace).select_related("flow")
    changes = ConfigChange.objects.filter(workspace=access.workspace).filter(
        Q(object_type="monitoring.skualias")
        | Q(object_type="monitoring.flow", note="SKU cleaning rules")
    )
    return render(
        request,
        "monitoring/config/aliases.html",
        _ctx(
            access,
            aliases=aliases.order_by("alias_key", "pk"),
            flows=Flow.objects.filter(workspace=access.workspace),
            form=form or (AliasForm(access.workspace) if access.is_admin else None),
            import_form=import_form or (AliasImportForm() if access.is_admin else None),
            cleaning_form=cleaning_form
            or (SkuCleaningForm(access.workspace) if access.is_admin else None),
            imported=imported,
            changes=changes.select_related("actor", "workspace")[:30],
        ),
        status=status,
    )


@require_http_methods(["GET", "POST"])
def alias_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    if request.method != "POST":
        return _alias_page(request, access)
    access.require_admin()
    form = AliasForm(access.workspace, request.POST)
    if not form.is_valid():
        return _alias_page(request, access, form=form, status=400)
    with transaction.atomic():
        alias = form.save()
        audit.record_change(
            access.workspace,
            request.user,
            alias,
            ConfigChange.Action.CREATED,
            None,
            audit.snapshot(alias, services.ALIAS_FIELDS),
        )
    messages.success(request, f"{alias} added.")
    return redirect("config:aliases", ws=ws)


@require_POST
def sku_cleaning(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    """Set a flow's SKU cleaning rules; its open SKU gaps are retried under them (fix once,
    release many: the events the rules now match get through, the others fail again)."""
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    form = SkuCleaningForm(access.workspace, request.POST)
    if not form.is_valid():
        return _alias_page(request, access, cleaning_form=form, status=400)
    flow = form.cleaned_data["flow"]
    before = audit.snapshot(flow, ["sku_cleaning"])
    with transaction.atomic():
        flow.sku_cleaning = form.cleaned_data["rules"]
        flow.save(update_fields=["sku_cleaning"])
        audit.record_change(
            access.workspace,
            request.user,
            flow,
            ConfigChange.Action.CHANGED,
            before,
            audit.snapshot(flow, ["sku_cleaning"]),
            note="SKU cleaning rules",
        )
        retried = services.retry_sku_gaps(flow)
    messages.success(
        request,
        f"Cleaning rules of {flow.name} saved"
        + (f"; {retried} blocked events are being retried." if retried else "."),
    )
    return redirect("config:aliases", ws=ws)


@require_POST
def alias_delete(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    alias, access = get_object_for_user(request, SkuAlias, ws, pk=pk)
    access.require_admin()
    with transaction.atomic():
        audit.record_change(
            access.workspace,
            request.user,
            alias,
            ConfigChange.Action.DELETED,
            audit.snapshot(alias, services.ALIAS_FIELDS),
            None,
        )
        alias.delete()
    messages.success(request, "Alias removed.")
    return redirect("config:aliases", ws=ws)


@require_POST
def alias_import(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    form = AliasImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _alias_page(request, access, import_form=form, status=400)
    result = services.import_aliases(access.workspace, request.user, form.cleaned_data["file"])
    if result.errors:
        return _alias_page(request, access, import_form=form, imported=result, status=400)
    messages.success(
        request,
        f"Imported: {result.created} new, {result.changed} changed, {result.unchanged} unchanged.",
    )
    return redirect("config:aliases", ws=ws)


@require_GET
def alias_export(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    response = HttpResponse(services.export_aliases(access.workspace), content_type="text/csv")
    response["Content-Disposition"] = (
        f'attachment; filename="{access.workspace.slug}-sku-aliases.csv"'
    )
    return response


# -- schedules -------------------------------------------------------------------------------


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
        _ctx(access, schedules=schedules.order_by("name"), form=form, tasks=TASKS),
        status=status,
    )


@require_http_methods(["GET", "POST"])
def schedule_edit(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    schedule, access = get_object_for_user(request, Schedule, ws, pk=pk)
    form = _read_only(ScheduleForm(access.workspace, instance=schedule), access)
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
        _ctx(access, schedule=schedule, form=form, changes=audit.history_of(schedule)[:30]),
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


# -- routing and the runbook -----------------------------------------------------------------


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
        _ctx(
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
        _ctx(
            access,
            teams=services.runbook(access.workspace),
            kinds=sorted(KINDS.values(), key=lambda k: k.title),
            daily=services.DAILY_CHECKS,
        ),
    )


# -- lists and programs ----------------------------------------------------------------------


def _destination(access: WorkspaceAccess, pk: str | int | None) -> Connection:
    qs = Connection.objects.filter(workspace=access.workspace, kind=Connection.Kind.DOTDIGITAL)
    try:
        return qs.get(pk=int(pk or 0))
    except (Connection.DoesNotExist, ValueError):
        raise Http404("No such DotDigital connection") from None


def _lists_page(
    request: AuthenticatedHttpRequest,
    access: WorkspaceAccess,
    bound: FlowListsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    destinations = []
    flows = Flow.objects.filter(workspace=access.workspace).order_by("name")
    for conn in Connection.objects.filter(
        workspace=access.workspace, kind=Connection.Kind.DOTDIGITAL
    ).order_by("name"):
        error = ""
        books: dict[str, Any] = {}
        programs: list[tuple[int, str]] | None = None
        try:
            client = services.client_for(conn)
            books = {b.name: b for b in client.list_address_books()}
            programs = [(p.id, p.name) for p in client.list_programs()]
        except (DotDigitalError, ConnectorError) as exc:
            error = f"Could not read the account: {exc}"
        names = dict(programs or [])
        enrolments = [
            (e, names.get(e.program_id, f"program {e.program_id}"))
            for e in DirectEnrolment.objects.filter(destination=conn).order_by("event_type")
        ]
        per_flow = []
        for flow in (f for f in flows if f.destination_id == conn.pk):
            if bound is not None and bound.instance.pk == flow.pk:
                form = bound
            else:
                form = _read_only(FlowListsForm(flow, None if error else list(books)), access)
            rules = [(rule, books.get(rule.name)) for rule in list_rules(flow)]
            per_flow.append(
                {
                    "flow": flow,
                    "rules": rules,
                    "back_in_stock": books.get(flow.back_in_stock_list),
                    "form": form,
                }
            )
        destinations.append(
            {
                "conn": conn,
                "error": error,
                "flows": per_flow,
                "books": sorted(books.values(), key=lambda b: b.name),
                "enrolments": enrolments,
                "form": EnrolmentForm(programs) if access.is_admin else None,
            }
        )
    return render(
        request,
        "monitoring/config/lists.html",
        _ctx(
            access,
            destinations=destinations,
            changes=ConfigChange.objects.filter(
                workspace=access.workspace, object_type="monitoring.flow", note="Lists"
            )[:20],
        ),
        status=status,
    )


@require_GET
def lists(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    """Per DotDigital connection, per flow delivering to it: the lists the flow keeps (dispatched
    today, recent buyers, back in stock) chosen from the account's lists or created, their periods,
    and whether the account has them; and the direct program enrolments."""
    access = get_workspace_for_user(request, ws)
    return _lists_page(request, access)


@require_POST
def flow_lists(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """Save a flow's lists; a list named new is created in the DotDigital account first."""
    flow, access = get_object_for_user(
        request, Flow.objects.select_related("destination"), ws, pk=pk
    )
    access.require_admin()
    if flow.destination is None:
        raise Http404("The flow delivers to no DotDigital connection")
    books: list[str] | None
    client = services.client_for(flow.destination)
    try:
        books = [b.name for b in client.list_address_books()]
    except (DotDigitalError, ConnectorError):
        books = None
    before = audit.snapshot(flow, LIST_FIELDS)
    form = FlowListsForm(flow, books, request.POST)
    if not form.is_valid():
        return _lists_page(request, access, bound=form, status=400)
    for name in form.to_create:
        try:
            book = client.create_address_book(name)
        except (DotDigitalError, ConnectorError) as exc:
            form.add_error(None, f"DotDigital did not create “{name}”: {exc}")
            return _lists_page(request, access, bound=form, status=400)
        audit.record_change(
            access.workspace,
            request.user,
            f"DotDigital list {book.name}",
            ConfigChange.Action.CREATED,
            None,
            {"name": book.name, "id": book.id},
            note=f"In the account of {flow.destination.name}, for {flow.name}",
            object_type=services.DOTDIGITAL_LIST,
            object_id=flow.destination.pk,
        )
    with transaction.atomic():
        flow = form.save()
        audit.record_change(
            access.workspace,
            request.user,
            flow,
            ConfigChange.Action.CHANGED,
            before,
            audit.snapshot(flow, LIST_FIELDS),
            note="Lists",
        )
    messages.success(request, f"Lists of {flow.name} saved.")
    return redirect(f"{reverse('config:lists', kwargs={'ws': ws})}#flow-{flow.pk}")


@require_POST
def list_create(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """Create one of the lists a flow keeps in the DotDigital account now (delivery would on
    first use)."""
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    conn = _destination(access, pk)
    name = request.POST.get("name", "")
    kept = {rule.name for rule in list_rules(None)}  # a new flow's
    kept |= {rule.name for flow in conn.destination_flows.all() for rule in list_rules(flow)}
    kept |= {f.back_in_stock_list for f in conn.destination_flows.all() if f.back_in_stock_list}
    if name not in kept:
        raise Http404("Not a list a flow keeps")
    try:
        book = services.client_for(conn).create_address_book(name)
    except (DotDigitalError, ConnectorError) as exc:
        messages.error(request, f"DotDigital did not create the list: {exc}")
        return redirect("config:lists", ws=ws)
    audit.record_change(
        access.workspace,
        request.user,
        f"DotDigital list {book.name}",
        ConfigChange.Action.CREATED,
        None,
        {"name": book.name, "id": book.id},
        note=f"In the account of {conn.name}",
        object_type=services.DOTDIGITAL_LIST,
        object_id=conn.pk,
    )
    messages.success(request, f"{book.name} created in DotDigital.")
    return redirect("config:lists", ws=ws)


@require_POST
def enrolment_add(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    conn = _destination(access, pk)
    programs: list[tuple[int, str]] | None
    try:
        programs = [(p.id, p.name) for p in services.client_for(conn).list_programs()]
    except (DotDigitalError, ConnectorError):
        programs = None
    form = EnrolmentForm(programs, request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items()),
        )
        return redirect("config:lists", ws=ws)
    row, made = DirectEnrolment.objects.get_or_create(
        workspace=access.workspace,
        destination=conn,
        program_id=form.cleaned_data["program"],
        event_type=form.cleaned_data["event_type"],
    )
    if made:
        audit.record_change(
            access.workspace,
            request.user,
            row,
            ConfigChange.Action.CREATED,
            None,
            audit.snapshot(row, ENROLMENT_FIELDS),
        )
    messages.success(request, f"{row} {'added' if made else 'was already there'}.")
    return redirect("config:lists", ws=ws)


@require_POST
def enrolment_toggle(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    row, access = get_object_for_user(request, DirectEnrolment, ws, pk=pk)
    access.require_admin()
    before = audit.snapshot(row, ENROLMENT_FIELDS)
    row.enabled = not row.enabled
    row.save(update_fields=["enabled"])
    audit.record_change(
        access.workspace,
        request.user,
        row,
        ConfigChange.Action.CHANGED,
        before,
        audit.snapshot(row, ENROLMENT_FIELDS),
    )
    messages.success(request, f"{row} {'enabled' if row.enabled else 'disabled'}.")
    return redirect("config:lists", ws=ws)
