"""Step 3, plan: staged (READY) events become outbox operations, coalesced per destination key.

A batch of events is claimed like any row (lease, SKIP LOCKED / conditional update), its state is
loaded set-based, each event's operations are built from the merged state as it is now
(`mapping.specs_for`), and written in one transaction:

- an open operation (pending, sending or sent) of the same destination key takes the new payload
  and a new `version` instead of a second write being queued (one write per key in flight);
- each event is linked to each operation it needs, at that version: the event is delivered once
  a write of that version or newer is confirmed;
- the events stay READY, leased to the outbox (`lease_owner="outbox"`, no expiry, `in_outbox`)
  until their operations settle (`confirm.settle_events`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.models import (
    OPEN_STATES,
    Customer,
    DeliveryBatch,
    DirectEnrolment,
    FieldMapping,
    Flow,
    ListMembership,
    Operation,
    OperationEvent,
    Order,
    Product,
    ProgramEnrolment,
    Shipment,
    SourceEvent,
    StockLevel,
)
from monitoring.pipeline import rows
from monitoring.pipeline.claims import claim_ids, worker_token, working
from monitoring.pipeline.mapping import Context, OpSpec, refresh_fields, specs_for, stock_total
from monitoring.pipeline.normalise import clean_sku, is_credit_document, parse_time
from monitoring.pipeline.rows import bulk_set, insert_rows
from monitoring.pipeline.wake import wake_delivery

log = logging.getLogger(__name__)

OUTBOX = "outbox"  # the lease owner of events whose operations are in the outbox
PLAN_BATCH = 500
PLAN_LEASE_SECONDS = 120
State = SourceEvent.State
REALTIME = SourceEvent.Lane.REALTIME


def ready_events(
    *, lane: str | None = None, destination_id: int | None = None, now: datetime | None = None
) -> Any:
    """READY events not yet in the outbox (or whose planning worker died), oldest first."""
    now = now or timezone.now()
    qs = SourceEvent.objects.ready_to_deliver().filter(
        # An event in the outbox is `in_outbox` (its lease, to OUTBOX, never expires).
        Q(lease_owner="") | Q(lease_until__lt=now),
        in_outbox=False,
    )
    if lane is not None:
        qs = qs.filter(lane=lane)
    if destination_id is not None:
        qs = qs.filter(flow__destination_id=destination_id)
    return qs.order_by("staged_at", "pk")


def run_planning(
    *,
    lane: str | None = None,
    destination_id: int | None = None,
    batch_size: int = PLAN_BATCH,
    time_budget: float | None = None,
    event_ids: list[int] | None = None,
) -> int:
    """Plan READY events until none is left (or the time budget is spent); returns how many.
    `event_ids`: only these (a batch just staged), found by primary key; without them, the claim
    reads `event_ready` (READY events not yet in the outbox), oldest first."""
    started = time.monotonic()
    total = 0
    if event_ids is not None and not event_ids:
        return 0
    while True:
        owner = worker_token()
        candidates = ready_events(lane=lane, destination_id=destination_id)
        if event_ids is not None:
            candidates = candidates.filter(pk__in=event_ids)
        with working(owner):
            ids = claim_ids(
                candidates,
                limit=batch_size,
                owner=owner,
                lease_seconds=PLAN_LEASE_SECONDS,
            )
            if not ids:
                return total
            try:
                total += plan_batch(ids, owner)
            except DatabaseError:
                # A deadlock or a lost connection: the events go back at once, not when the
                # lease runs out (two minutes of latency for a dispatch).
                SourceEvent.objects.filter(pk__in=ids, lease_owner=owner).update(
                    lease_owner="", lease_until=None
                )
                raise
        if len(ids) < batch_size:
            return total
        if time_budget is not None and time.monotonic() - started > time_budget:
            return total


@dataclass
class Planned:
    """One destination key's merged spec in this batch, with the events that need it."""

    destination_id: int
    workspace_id: int
    spec: OpSpec
    lane: str
    events: list[int] = field(default_factory=list)


def load_context(events: list[SourceEvent], now: datetime) -> Context:
    ctx = Context(now=now)
    order_ids = {e.order_id for e in events if e.order_id}
    ctx.orders = Order.objects.in_bulk(order_ids) if order_ids else {}
    customer_ids = {e.customer_id for e in events if e.customer_id} | {
        o.customer_id for o in ctx.orders.values() if o.customer_id
    }
    ctx.customers = Customer.objects.in_bulk(customer_ids) if customer_ids else {}
    if order_ids:
        for shipment in Shipment.objects.filter(order_id__in=order_ids):
            ctx.shipments.setdefault(shipment.order_id, []).append(shipment)
    buyers = {o.customer_id for o in ctx.orders.values() if o.customer_id}
    if buyers:
        rows = (
            Order.objects.filter(customer_id__in=buyers, last_dispatched_at__isnull=False)
            .values_list("customer_id", "last_dispatched_at", "refunded_total")
            .order_by("customer_id", "last_dispatched_at")
        )
        for customer_id, dispatched, refunded in rows:
            ctx.latest_dispatch[customer_id] = (dispatched, bool(refunded and refunded > 0))
    skus: dict[int, set[str]] = defaultdict(set)
    stock_skus: dict[int, set[str]] = defaultdict(set)
    for event in events:
        if event.event_type == "product.updated":
            skus[event.workspace_id].add(clean_sku(str(event.data.get("sku") or "")))
        elif event.event_type == "stock.changed":
            stock_skus[event.workspace_id].add(clean_sku(str(event.data.get("sku") or "")))
    for workspace_id, names in skus.items():
        for product in Product.objects.filter(workspace_id=workspace_id, sku__in=names):
            ctx.products[(workspace_id, product.sku)] = product
    for workspace_id, names in stock_skus.items():
        levels: dict[str, list[Any]] = defaultdict(list)
        for sku, *level in StockLevel.objects.filter(
            workspace_id=workspace_id, sku__in=names
        ).values_list("sku", "saleable", "as_of", "derived"):
            levels[sku].append(level)
        for sku, rows_of_sku in levels.items():
            ctx.stock[(workspace_id, sku)] = stock_total(rows_of_sku)
    flow_ids = {e.flow_id for e in events if e.flow_id}
    for mapping in FieldMapping.objects.filter(flow_id__in=flow_ids, enabled=True).order_by("pk"):
        ctx.mappings.setdefault(mapping.flow_id, []).append(mapping)
    return ctx


PLAN_LOCK = 0x504C414E  # pg advisory lock class of "planning this contact or SKU"


def subject_keys(events: list[SourceEvent]) -> list[int]:
    """The advisory lock keys of what a batch plans for: its contacts (an order event's buyer
    included) and its SKUs, as signed 32-bit ints, sorted (planners lock in one order)."""
    customers = {e.customer_id for e in events if e.customer_id}
    no_buyer = {e.order_id for e in events if e.order_id and not e.customer_id}
    if no_buyer:
        customers |= set(
            Order.objects.filter(pk__in=no_buyer, customer_id__isnull=False).values_list(
                "customer_id", flat=True
            )
        )
    names = [f"c:{pk}" for pk in customers]
    names += [
        f"s:{e.workspace_id}:{clean_sku(str(e.data.get('sku') or ''))}"
        for e in events
        if e.event_type in ("product.updated", "stock.changed")
    ]
    keys = {
        int.from_bytes(hashlib.blake2b(n.encode(), digest_size=4).digest(), "big", signed=True)
        for n in names
    }
    return sorted(keys)


def lock_subjects(events: list[SourceEvent]) -> None:
    """Hold, until this transaction ends, the planning locks of the batch's contacts and SKUs
    (PostgreSQL; on SQLite every transaction takes the one write lock at BEGIN IMMEDIATE)."""
    if connection.vendor != "postgresql":
        return
    keys = subject_keys(events)
    if keys:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k",
                [PLAN_LOCK, keys],
            )


def _settle_unplanned(
    nothing: list[int], no_destination: list[int], now: datetime, reasons: dict[int, str]
) -> None:
    """Events that reach no outbox end here: delivered when DotDigital already holds what they
    say; skipped with the reason when what they say cannot be written (`reasons`: a saleable
    total left unknown) or their flow has no DotDigital connection."""
    delivered = [pk for pk in nothing if pk not in reasons]
    if delivered:
        SourceEvent.objects.filter(pk__in=delivered).update(
            state=State.DELIVERED,
            delivered_at=now,
            lease_owner="",
            lease_until=None,
            reason="Nothing to change in DotDigital.",
        )
    skipped: dict[str, list[int]] = defaultdict(list)
    for pk in nothing:
        if pk in reasons:
            skipped[reasons[pk]].append(pk)
    skipped["The flow delivers to no DotDigital connection."] += no_destination
    for reason, pks in skipped.items():
        if pks:
            SourceEvent.objects.filter(pk__in=pks).update(
                state=State.SKIPPED, lease_owner="", lease_until=None, reason=reason
            )


def plan_batch(ids: Iterable[int], owner: str) -> int:
    """Turn the claimed events into operations (one transaction). Returns how many it planned."""
    ids = list(ids)
    now = timezone.now()
    events = list(
        SourceEvent.objects.filter(pk__in=ids, lease_owner=owner, state=State.READY).order_by(
            "staged_at", "pk"
        )
    )
    if not events:
        return 0
    # A batch names a flow or two: each read once, not joined to every event and built anew.
    flows = Flow.objects.in_bulk({e.flow_id for e in events if e.flow_id})
    wake: set[tuple[int, str]] = set()
    with transaction.atomic():
        # Two planners of one contact (a dispatch in the realtime lane, its refund in the bulk
        # lane) must not both plan from state the other has not seen: the second waits, then
        # reads the state as the first left it (else a refund's list removal is dropped as a
        # no-op while the dispatch's add is still being planned).
        lock_subjects(events)
        # Links of an earlier attempt (an inbox retry) are not this attempt's.
        OperationEvent.objects.filter(event_id__in=[e.pk for e in events]).delete()
        ctx = load_context(events, now)
        planned: dict[tuple[int, str], Planned] = {}
        nothing: list[int] = []
        no_destination: list[int] = []
        enrol: list[tuple[SourceEvent, int]] = []
        for event in events:
            flow = flows.get(event.flow_id) if event.flow_id else None
            if flow is None or flow.destination_id is None:
                no_destination.append(event.pk)
                continue
            specs = specs_for(event, ctx, flow.sends_aggregates)
            if not specs:
                nothing.append(event.pk)
                continue
            for spec in specs:
                slot = (flow.destination_id, spec.key)
                current = planned.get(slot)
                if current is None:
                    current = planned[slot] = Planned(
                        flow.destination_id, event.workspace_id, spec, event.lane
                    )
                else:
                    current.spec = merge_specs(current.spec, spec, ctx)
                    if event.lane == REALTIME:
                        current.lane = REALTIME
                current.events.append(event.pk)
            if not is_credit_document(event.data):  # a credit note is no purchase to enrol on
                enrol.append((event, flow.destination_id))
        _drop_list_noops(planned, now)
        linked = write_operations(planned, now, ctx)
        linked_events = {event_id for event_ids in linked.values() for event_id in event_ids}
        # Events whose writes were all no-ops (a list membership DotDigital already has).
        nothing.extend(
            e.pk
            for e in events
            if e.pk not in linked_events and e.pk not in nothing and e.pk not in no_destination
        )
        _program_enrolments(enrol, ctx)
        SourceEvent.objects.filter(pk__in=list(linked_events)).update(
            lease_owner=OUTBOX, lease_until=None, in_outbox=True
        )
        _settle_unplanned(nothing, no_destination, now, ctx.reasons)
        for planned_op in planned.values():
            wake.add((planned_op.destination_id, planned_op.lane))
        if wake:
            for destination_id, lane in sorted(wake):
                wake_delivery(destination_id, lane)
    return len(events)


def merge_specs(old: OpSpec, new: OpSpec, ctx: Context) -> OpSpec:
    """Two wants of one destination key: the newer state wins, nothing asked for is dropped."""
    if new.kind == "contact" and old.kind == "contact":
        fields = dict(old.payload.get("fields") or {})
        fields.update(new.payload.get("fields") or {})
        customer = ctx.customers.get(new.customer_id or 0)
        if customer is not None:
            fields = refresh_fields(fields, customer)
        return OpSpec(**{**new.__dict__, "payload": {**new.payload, "fields": fields}})
    if new.kind == "consent" and old.kind == "consent":
        return new if _consent_at(new.payload) >= _consent_at(old.payload) else old
    return new


def _consent_at(payload: dict[str, Any]) -> str:
    moment = parse_time(str(payload.get("consent_at") or ""))
    return moment.isoformat() if moment else ""


def _drop_list_noops(planned: dict[tuple[int, str], Planned], now: datetime) -> None:
    """A list write DotDigital already reflects (and no open write for it) is not queued; a
    member's new expiry is only kept here (the expiry sweep takes it off)."""
    wanted = [p for p in planned.values() if p.spec.kind in ("list_add", "list_remove")]
    if not wanted:
        return
    keys = {(p.destination_id, p.spec.key) for p in wanted}
    open_keys = set(
        Operation.objects.filter(
            destination_id__in={d for d, _ in keys},
            key__in=[k for _, k in keys],
            state__in=OPEN_STATES,
        ).values_list("destination_id", "key")
    )
    rows = {
        (m.destination_id, m.list_name, m.email): m
        for m in ListMembership.objects.filter(
            destination_id__in={p.destination_id for p in wanted},
            email__in={p.spec.record_key for p in wanted},
        )
    }
    renewed: list[ListMembership] = []
    for p in wanted:
        if (p.destination_id, p.spec.key) in open_keys:
            continue
        row = rows.get((p.destination_id, p.spec.payload["list"], p.spec.record_key))
        member = bool(row and row.member)
        if p.spec.kind == "list_remove" and not member:
            del planned[(p.destination_id, p.spec.key)]
        elif p.spec.kind == "list_add" and member and row is not None:
            expires = parse_time(p.spec.payload.get("expires_at"))
            # The expiry follows the state exactly (a local write, no call): rounding it would
            # keep a contact on a post-purchase list past its time, or take it off early.
            if expires != row.expires_at:
                row.expires_at = expires
                renewed.append(row)
            del planned[(p.destination_id, p.spec.key)]
    if renewed:
        bulk_set(renewed, ["expires_at"])


def write_operations(
    planned: dict[tuple[int, str], Planned], now: datetime, ctx: Context
) -> dict[int, list[int]]:
    """Upsert the open operation of each destination key; link the events. Returns op → events."""
    if not planned:
        return {}
    by_destination: dict[int, list[str]] = defaultdict(list)
    for destination_id, key in planned:
        by_destination[destination_id].append(key)
    existing = _lock_open(by_destination)
    # New keys: inserted at version 1, carrying their events' payload (no second write). A key
    # whose insert a racing writer's row made a no-op (the partial unique index: an expiry
    # sweep's list removal) is merged into that row below instead.
    fresh = [
        Operation(
            workspace_id=p.workspace_id,
            destination_id=p.destination_id,
            key=p.spec.key,
            kind=p.spec.kind,
            lane=p.lane,
            record_key=p.spec.record_key,
            contact_key=p.spec.contact_key,
            customer_id=p.spec.customer_id,
            collection=p.spec.collection,
            payload=p.spec.payload,
            version=1,
            next_attempt_at=now,
            created_at=now,
        )
        for slot, p in sorted(planned.items())  # in key order: concurrent planners never deadlock
        if slot not in existing
    ]
    inserted = _insert_fresh(fresh)
    lost: dict[int, list[str]] = defaultdict(list)
    for new in fresh:
        if (new.destination_id, new.key) not in inserted:
            lost[new.destination_id].append(new.key)
    if lost:
        existing.update(_lock_open(lost))
    changed: list[Operation] = []
    links: list[tuple[int, int, int]] = []  # (operation_id, event_id, version)
    out: dict[int, list[int]] = {}
    awaited: set[int] = set()  # bulk imports carrying a record a realtime write now waits for
    for slot, p in planned.items():
        found = inserted.get(slot) or existing.get(slot)
        if found is None:  # settled between our insert and our read: try again next batch
            log.warning("operation %s vanished while planning", slot)
            continue
        op = found
        if slot not in inserted:
            if op.version > 0:
                spec = _merge_into(op, p.spec, ctx)
                op.payload = spec.payload
                op.kind = spec.kind
                if p.lane == REALTIME:
                    op.lane = REALTIME
                    if op.state == Operation.State.SENT and op.batch_id is not None:
                        awaited.add(op.batch_id)
                if op.state == Operation.State.PENDING and op.attempts == 0:
                    op.next_attempt_at = min(op.next_attempt_at, now)
            op.version += 1
            changed.append(op)
        out[op.pk] = p.events
        links.extend((op.pk, event_id, op.version) for event_id in p.events)
    bulk_set(changed, ["payload", "kind", "lane", "version", "next_attempt_at"])
    _await_imports(awaited, now)
    if rows.arrays():
        rows.insert_values(
            OperationEvent, ("operation_id", "event_id", "version"), links, ignore_conflicts=True
        )
    else:
        OperationEvent.objects.bulk_create(
            [OperationEvent(operation_id=o, event_id=e, version=v) for o, e, v in links],
            ignore_conflicts=True,
            batch_size=1000,
        )
    return out


def _await_imports(batch_ids: set[int], now: datetime) -> None:
    """Bulk imports carrying a record a realtime write now waits for are polled by the realtime
    lane from now on (`confirm.lane_imports`), so the newer state goes as soon as DotDigital has
    finished the import, not at the bulk lane's next look."""
    if batch_ids:
        DeliveryBatch.objects.filter(
            pk__in=batch_ids, state=DeliveryBatch.State.SUBMITTED, awaited=False
        ).exclude(lane=REALTIME).update(awaited=True, next_attempt_at=now)


def _insert_fresh(fresh: list[Operation]) -> dict[tuple[int, str], Operation]:
    """Insert new operations; returns those inserted (with their ids) by destination key."""
    if not fresh:
        return {}
    by_slot = {(op.destination_id, op.key): op for op in fresh}
    if rows.arrays():
        inserted = insert_rows(
            fresh, ignore_conflicts=True, returning=("id", "destination_id", "key")
        )
        for pk, destination_id, key in inserted:
            by_slot[(destination_id, key)].pk = pk
    elif connection.vendor == "postgresql":
        # Without array inserts (`rows.USE_ARRAYS` off, a baseline to measure against): Django's
        # insert, then every new row read back and updated (as a key taken meanwhile is).
        Operation.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=500)
        return {}
    else:  # SQLite: this transaction holds the one write lock (BEGIN IMMEDIATE), nobody races
        Operation.objects.bulk_create(fresh, batch_size=500)
    return {slot: op for slot, op in by_slot.items() if op.pk is not None}


def _lock_open(by_destination: dict[int, list[str]]) -> dict[tuple[int, str], Operation]:
    """The open operations of these keys, locked in pk order (as `confirm.record_results` locks
    them), so planning and confirmation never deadlock."""
    found: dict[tuple[int, str], Operation] = {}
    for destination_id, keys in sorted(by_destination.items()):
        qs = (
            Operation.objects.select_for_update()
            .filter(destination_id=destination_id, key__in=keys, state__in=OPEN_STATES)
            .order_by("pk")
        )
        for op in qs:
            found[(destination_id, op.key)] = op
    return found


def _merge_into(op: Operation, new: OpSpec, ctx: Context) -> OpSpec:
    old = OpSpec(
        key=op.key,
        kind=op.kind,
        record_key=op.record_key,
        payload=op.payload,
        contact_key=op.contact_key,
        collection=op.collection,
        customer_id=op.customer_id,
    )
    return merge_specs(old, new, ctx)


def _program_enrolments(enrol: list[tuple[SourceEvent, int]], ctx: Context) -> None:
    """Configured direct enrolments: one row per (program, contact), ever (sent at most once)."""
    if not enrol:
        return
    configured: dict[tuple[int, str], list[int]] = defaultdict(list)
    for row in DirectEnrolment.objects.filter(
        destination_id__in={d for _, d in enrol}, enabled=True
    ):
        configured[(row.destination_id, row.event_type)].append(row.program_id)
    if not configured:
        return
    rows: list[ProgramEnrolment] = []
    for event, destination_id in enrol:
        programs = configured.get((destination_id, event.event_type))
        customer = ctx.customers.get(event.customer_id or 0)
        if not programs or customer is None or not customer.email:
            continue
        rows.extend(
            ProgramEnrolment(
                workspace_id=event.workspace_id,
                destination_id=destination_id,
                program_id=program_id,
                email=customer.email,
                event_id=event.pk,
            )
            for program_id in programs
        )
    ProgramEnrolment.objects.bulk_create(rows, ignore_conflicts=True)
