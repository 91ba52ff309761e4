"""A flow's field mappings (what each DotDigital field takes from an event), creating a
DotDigital data field from the page, and the dry run of the mappings on a sample event."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import audit
from accounts.access import WorkspaceAccess, get_object_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from connectors.dotdigital.errors import ConnectorError, DotDigitalError, explain
from monitoring.configuration import services
from monitoring.configuration.forms import (
    CreateDataFieldForm,
    DryRunForm,
    MappingForm,
)
from monitoring.configuration.views.common import context
from monitoring.models import FieldMapping, Flow


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
    shared = services.other_flows_writing(flow)
    rows = [
        (
            m,
            (fields or {}).get(m.target.upper()),
            account.type_problem(m.target, m.type) if fields is not None else None,
            shared.get(m.target.upper(), 0),
        )
        for m in mappings
    ]
    ctx = context(
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
            result.also = [m.flow.name for m in form.also_changed]
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
            also = services.change_other_writers(
                saved, form.also_changed, access.workspace, request.user
            )
        if also:
            names = ", ".join(f"“{name}”" for name in also)
            messages.success(request, f"{saved} saved, here and for {names}.")
        else:
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
        messages.error(
            request,
            f"DotDigital did not create {form.cleaned_data['name']}. "
            + explain(exc, retry="Try again in a minute."),
        )
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
        context(access, flow=flow, dry_form=form, result=result, events=events),
        status=status,
    )
