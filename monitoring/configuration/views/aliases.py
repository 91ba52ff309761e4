"""SKU aliases (one product under several SKUs): the list, the SKU cleaning rules, CSV import
and export."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.access import WorkspaceAccess, get_object_for_user, get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from monitoring.configuration import services
from monitoring.configuration.forms import (
    AliasForm,
    AliasImportForm,
    SkuCleaningForm,
)
from monitoring.configuration.views.common import context
from monitoring.models import Flow, SkuAlias


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
        context(
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
