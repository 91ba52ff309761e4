"""Shipments: `shipment.dispatched`, `shipment.tracking_updated` and `shipment.carrier_scanned`
onto their order, held while the order (or, where the flow waits for it, the carrier's scan) has
not arrived.
"""

from __future__ import annotations

from datetime import timedelta

from monitoring.models import (
    Flow,
    Order,
    Shipment,
    SourceEvent,
)
from monitoring.pipeline.normalise import parse_time
from monitoring.pipeline.staging.batch import Batch, Hold, Outcome, State, save_row
from monitoring.pipeline.staging.holds import hold_orphan, next_look
from monitoring.pipeline.staging.orders import link_order, order_of, parent_order, save_order


def stage_dispatch(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    data = event.data
    order = parent_order(event, flow, batch)
    key = str(data["shipment_key"])
    shipment = _shipment_by_key(event, batch, key)
    dispatched_at = parse_time(data.get("dispatched_at")) or event.occurred_at
    if shipment is not None and event.source_version < shipment.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this shipment is staged.")
    if shipment is None:
        shipment = Shipment(workspace_id=event.workspace_id, shipment_key=key, order=order)
        if batch.cache is not None:
            batch.cache.shipments[(event.workspace_id, key)] = shipment
    shipment.order = order
    shipment.dispatched_at = dispatched_at
    shipment.tracking_numbers = data.get("tracking_numbers") or shipment.tracking_numbers
    shipment.carrier = data.get("carrier") or shipment.carrier
    shipment.lines = data.get("lines") or []
    shipment.source_version = event.source_version
    save_row(batch, shipment)
    order.first_dispatched_at = min(filter(None, [order.first_dispatched_at, dispatched_at]))
    order.last_dispatched_at = max(filter(None, [order.last_dispatched_at, dispatched_at]))
    if order.fulfilment != "dispatched":
        order.fulfilment = (
            "dispatched" if _every_part_shipped(event, order, batch) else "partially_dispatched"
        )
    save_order(batch, order)
    link_order(event, order, batch)
    batch.released_entities.setdefault(event.workspace_id, set()).add(event.entity_key)
    if flow.hold_dispatch_for_scan and shipment.first_scan_at is None:
        if event.hold != Hold.CARRIER_SCAN or event.hold_deadline is None:
            event.hold_deadline = event.received_at + timedelta(seconds=flow.scan_hold_seconds)
        if batch.now < event.hold_deadline:
            # Held with the state written: the dispatch date counts, only the trigger waits.
            event.state = State.HELD
            event.hold = Hold.CARRIER_SCAN
            event.next_attempt_at = next_look(event, batch)
            event.reason = (
                "Waiting for the carrier's first scan "
                f"(until {event.hold_deadline:%Y-%m-%d %H:%M} UTC)."
            )
            return
        event.reason = "The carrier's first scan did not come by the deadline: sent without it."


def _every_part_shipped(event: SourceEvent, order: Order, batch: Batch) -> bool:
    """Whether this dispatch completes the order (sources.md §12.7: order-level "dispatched" only
    once every part has gone). A dispatch not marked partial completes it; a part of a split
    (Mintsoft's `Part`/`NumberOfParts`: each part its own shipment of the one order) completes it
    once the order has as many shipments as the split has parts, whatever order they came in."""
    data = event.data
    if not data.get("is_partial"):
        return True
    try:
        parts = int(data.get("parts") or 0)
    except (TypeError, ValueError):
        parts = 0
    if parts < 2:
        return False
    ws = event.workspace_id
    keys = {str(data["shipment_key"])}
    if order.pk:
        keys.update(
            Shipment.objects.filter(workspace_id=ws, order_id=order.pk).values_list(
                "shipment_key", flat=True
            )
        )
    if batch.cache is not None:  # the batch's own shipments, not inserted yet on the fast path
        keys.update(
            key
            for (cached_ws, key), kept in batch.cache.shipments.items()
            if cached_ws == ws and kept is not None and kept.order is order
        )
    return len(keys) >= parts


def _shipment_by_key(event: SourceEvent, batch: Batch, key: str) -> Shipment | None:
    cache, ws = batch.cache, event.workspace_id
    if cache is not None and (ws, key) in cache.shipments:
        return cache.shipments[(ws, key)]
    shipment = (
        Shipment.objects.select_for_update().filter(workspace_id=ws, shipment_key=key).first()
    )
    if cache is not None:
        cache.shipments[(ws, key)] = shipment
    return shipment


def _shipment_for(event: SourceEvent, batch: Batch) -> Shipment | None:
    data = event.data
    if data.get("shipment_key"):
        return _shipment_by_key(event, batch, str(data["shipment_key"]))
    number = str(data.get("tracking_number") or "")
    cache, ws = batch.cache, event.workspace_id
    if cache is not None:
        for kept in cache.shipments.values():
            if kept is not None and kept.workspace_id == ws and number in kept.tracking_numbers:
                return kept
    qs = Shipment.objects.select_for_update().filter(workspace_id=ws)
    for shipment in qs.filter(tracking_numbers__icontains=number):
        if cache is not None:  # the batch's own instance, when it has one
            shipment = cache.shipments.get((ws, shipment.shipment_key)) or shipment
            cache.shipments[(ws, shipment.shipment_key)] = shipment
        if number in shipment.tracking_numbers:
            return shipment
    return None


def _hold_for_shipment(event: SourceEvent, flow: Flow, batch: Batch) -> Shipment:
    shipment = _shipment_for(event, batch)
    if shipment is None:
        hold_orphan(
            event,
            flow,
            batch,
            f"shipment {event.data.get('shipment_key') or event.data.get('tracking_number')}",
        )
        raise AssertionError("unreachable")
    return shipment


def stage_tracking(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    shipment = _hold_for_shipment(event, flow, batch)
    shipment.tracking_numbers = event.data.get("tracking_numbers") or shipment.tracking_numbers
    save_row(batch, shipment)
    link_order(event, order_of(batch, shipment), batch)


def stage_scan(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    shipment = _hold_for_shipment(event, flow, batch)
    scanned_at = parse_time(event.data.get("scanned_at"))
    if shipment.first_scan_at is None or (scanned_at and scanned_at < shipment.first_scan_at):
        shipment.first_scan_at = scanned_at
    shipment.scan_status = str(event.data.get("scan_status") or "")
    save_row(batch, shipment)
    link_order(event, order_of(batch, shipment), batch)
    # Dispatch triggers held for this scan go now.
    batch.scanned_orders.add(shipment.order_id)
