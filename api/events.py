"""Flows (their health, as the Flows page computes it) and events (filtered, paged by a keyset
cursor on (received_at, id), so events arriving meanwhile never shift a page; one with its
timeline)."""

from __future__ import annotations

from typing import Any, Literal

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field as NinjaField
from ninja import Query, Schema

from api.core import (
    MAX_PAGE,
    READ,
    RowId,
    api,
    cursor_int,
    cursor_time,
    decode_cursor,
    encode_cursor,
    key_access,
)
from api.schemas import (
    MAX_ID,
    EventDetail,
    EventOut,
    EventPage,
    FlowList,
    FlowOut,
    LaneLatency,
    Latency,
    Text,
    UtcTime,
)
from monitoring.models import Customer, Flow, OperationEvent, Order, Product, SourceEvent
from monitoring.watch import flow_health
from monitoring.watch.flow_health import FlowHealth

EventState = Literal["received", "held", "ready", "delivered", "skipped", "failed"]


@api.get("/w/{ws}/flows", response={200: FlowList, **READ}, tags=["flows"], summary="Flows")
def list_flows(request: HttpRequest, ws: str) -> dict[str, Any]:
    """Each flow's state, latency p50/p95 over the last hour and day, backlog and its oldest
    waiting event, the day's errors, and its last event in and out."""
    ka = key_access(request, ws)
    flows = Flow.objects.filter(workspace=ka.workspace).select_related("source", "destination")
    return {"items": [flow_out(h) for h in flow_health.flow_health(flows[:MAX_PAGE])]}


def flow_out(h: FlowHealth) -> FlowOut:
    return FlowOut(
        id=h.flow.pk,
        name=h.flow.name,
        is_active=h.flow.is_active,
        state=h.state,
        reasons=h.reasons,
        latency_seconds=Latency(
            p50_1h=h.p50_hour,
            p95_1h=h.p95_hour,
            p50_24h=h.p50_day,
            p95_24h=h.p95_day,
            by_lane_1h=[
                LaneLatency(lane=lane.lane, delivered=lane.delivered, p50=lane.p50, p95=lane.p95)
                for lane in h.lanes_hour
            ],
        ),
        delivered_1h=h.delivered_hour,
        delivered_24h=h.delivered_day,
        backlog=h.backlog,
        held=h.held,
        oldest_waiting_at=h.oldest_at,
        oldest_waiting_seconds=h.oldest_age,
        backfill_waiting=h.backfill_waiting,
        received_24h=h.received_day,
        failed_24h=h.failed_day,
        error_rate_24h=h.error_rate,
        last_event_in=h.last_in,
        last_event_out=h.last_delivered,
        open_alerts=[a.pk for a in h.open_alerts],
    )


class EventFilters(Schema):
    flow: int | None = NinjaField(default=None, ge=1, le=MAX_ID, description="A flow's id.")
    state: EventState | None = None
    lane: Literal["realtime", "bulk"] | None = None
    received_from: UtcTime | None = NinjaField(default=None, description="Received at or after.")
    received_to: UtcTime | None = NinjaField(default=None, description="Received before.")
    order_number: Text | None = NinjaField(default=None, max_length=100)
    email: Text | None = NinjaField(default=None, max_length=254)
    sku: Text | None = NinjaField(default=None, max_length=100)
    limit: int = NinjaField(default=100, ge=1, le=MAX_PAGE)
    cursor: Text | None = NinjaField(default=None, max_length=200)


@api.get("/w/{ws}/events", response={200: EventPage, **READ}, tags=["events"], summary="Events")
def list_events(request: HttpRequest, ws: str, filters: Query[EventFilters]) -> dict[str, Any]:
    """Events, newest first. An order number matches the events of that order (by the order's
    number or channel reference, and events naming it); an email, its customer's events; a SKU,
    its product's events (not orders with it in their lines, as on the timeline)."""
    ka = key_access(request, ws)
    qs = filtered_events(ka.workspace.pk, filters)
    after = decode_cursor(filters.cursor, 2)
    if after is not None:
        received, pk = cursor_time(after[0]), cursor_int(after[1])
        qs = qs.filter(received_at__lte=received).exclude(received_at=received, pk__gte=pk)
    # Newest first by (received_at, id), the order of `event_workspace_recent`: a time window is
    # then one range of the index, and events arriving meanwhile land before the first page.
    rows = list(qs.order_by("-received_at", "-pk")[: filters.limit + 1])
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    last = rows[-1] if rows else None
    return {
        "items": [event_out(e) for e in rows],
        "next_cursor": encode_cursor(last.received_at.isoformat(), last.pk)
        if more and last
        else None,
    }


def filtered_events(workspace_id: int, f: EventFilters) -> QuerySet[SourceEvent]:
    qs = SourceEvent.objects.filter(workspace_id=workspace_id)
    for name in ("state", "lane"):
        if getattr(f, name):
            qs = qs.filter(**{name: getattr(f, name)})
    if f.flow:
        qs = qs.filter(flow_id=f.flow)
    if f.received_from:
        qs = qs.filter(received_at__gte=f.received_from)
    if f.received_to:
        qs = qs.filter(received_at__lt=f.received_to)
    if f.order_number:
        number = f.order_number.strip()
        orders = Order.objects.filter(workspace_id=workspace_id).filter(
            Q(order_number=number) | Q(channel_order_ref=number)
        )
        qs = qs.filter(
            Q(order_ref=number) | Q(order_id__in=list(orders.values_list("pk", flat=True)[:50]))
        )
    if f.email:
        customers = Customer.objects.filter(
            workspace_id=workspace_id, email=f.email.strip().lower()
        )
        qs = qs.filter(customer_id__in=list(customers.values_list("pk", flat=True)[:50]))
    if f.sku:
        products = Product.objects.filter(workspace_id=workspace_id, sku=f.sku.strip())
        qs = qs.filter(entity_key__in=list(products.values_list("product_key", flat=True)[:50]))
    return qs


def event_out(e: SourceEvent) -> dict[str, Any]:
    latency = (
        (e.delivered_at - e.occurred_at).total_seconds()
        if e.state == SourceEvent.State.DELIVERED and e.delivered_at
        else None
    )
    fields = EventOut.model_fields
    data = {name: getattr(e, name) for name in fields if hasattr(e, name)}
    data.update(id=e.pk, flow_id=e.flow_id, latency_seconds=latency)
    return data


@api.get(
    "/w/{ws}/events/{event_id}",
    response={200: EventDetail, **READ},
    tags=["events"],
    summary="One event",
)
def get_event(request: HttpRequest, ws: str, event_id: RowId) -> dict[str, Any]:
    """The event with its envelope (redacted after the flow's retention), its timeline (received,
    held, staged, each operation sent, failures and retries, delivered or why not) and the
    DotDigital operations it waited on."""
    ka = key_access(request, ws)
    event = get_object_or_404(SourceEvent, workspace_id=ka.workspace.pk, pk=event_id)
    timeline = flow_health.timelines([event])[0]
    links = (
        OperationEvent.objects.filter(event_id=event.pk)
        .select_related("operation")
        .order_by("operation__created_at", "pk")
    )
    return {
        **event_out(event),
        "envelope": event.envelope if isinstance(event.envelope, dict) else {},
        "timeline": [
            {"at": s.at, "what": s.what, "kind": s.css, "detail": str(s.detail or "")}
            for s in timeline.steps
        ],
        "operations": [
            {
                "id": link.operation.pk,
                "kind": link.operation.kind,
                "record_key": link.operation.record_key,
                "state": link.operation.state,
                "version": link.version,
                "attempts": link.operation.attempts,
                "via": link.operation.via,
                "sent_at": link.operation.sent_at,
                "delivered_at": link.operation.delivered_at,
                "error_code": link.operation.error_code,
                "error_text": link.operation.error_text,
            }
            for link in links
        ],
    }
