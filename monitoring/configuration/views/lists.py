"""DotDigital address books and programs a flow feeds: the lists of dispatched orders, recent
buyers and back in stock, creating a list from the page, and direct program enrolments."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.access import WorkspaceAccess, get_object_for_user, get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from connectors.dotdigital.errors import ConnectorError, DotDigitalError, explain
from connectors.models import Connection
from monitoring.configuration import services
from monitoring.configuration.forms import (
    EnrolmentForm,
    FlowListsForm,
)
from monitoring.configuration.views.common import context, read_only
from monitoring.models import DirectEnrolment, Flow
from monitoring.pipeline.mapping import list_rules

LIST_FIELDS = [
    "dispatched_list",
    "dispatched_keep_hours",
    "recent_buyers_list",
    "recent_buyer_days",
    "back_in_stock_list",
]
ENROLMENT_FIELDS = ["program_id", "event_type", "enabled"]
AGAIN = "Try again in a minute."


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
            error = "Could not read the account. " + explain(
                exc, retry="Reload the page in a minute."
            )
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
                form = read_only(FlowListsForm(flow, None if error else list(books)), access)
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
        context(
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
            form.add_error(None, f"DotDigital did not create “{name}”. {explain(exc, retry=AGAIN)}")
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
        messages.error(request, f"DotDigital did not create the list. {explain(exc, retry=AGAIN)}")
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
