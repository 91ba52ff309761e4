"""Step 2, stage: claimed events, per entity key in source-version order, become the workspace's
merged state (identities, orders, shipments, refunds, products, stock), held, skipped, or failed
with an inbox occurrence. A staged event waits as READY ("ready to deliver") for part 2, which
builds its operations from `event.order` / `event.customer` and the state without staging again.

Each batch is one transaction: a fast path first (the state the batch names read up front, no
savepoint per event, new rows inserted together at the end on PostgreSQL), and when an event would
need its writes undone, the whole batch again on the safe path (a savepoint per event). Aggregates
are recomputed once per batch for the customers it touched (`recompute_aggregates`), never
incremented.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Model, Q
from django.utils import timezone

from accounts.models import Workspace
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import (
    Customer,
    CustomerKey,
    Flow,
    Order,
    Product,
    Refund,
    Shipment,
    SkuAlias,
    SourceEvent,
    StockDelta,
    StockLevel,
)
from monitoring.pipeline.claims import claim_ids, worker_token
from monitoring.pipeline.normalise import (
    clean_sku,
    minor_unit,
    money,
    normalise_email,
    parse_time,
    sku_match_key,
)
from monitoring.pipeline.rows import bulk_set
from monitoring.pipeline.transforms import clean_sku_by_rules
from monitoring.pipeline.wake import wake_staging

log = logging.getLogger(__name__)

BATCH_SIZE = 200
LEASE_SECONDS = 120
STAGE = "stage"
State = SourceEvent.State
Hold = SourceEvent.Hold
REALTIME_TYPES = {
    "consent.changed",
    "order.created",
    "shipment.dispatched",
    "shipment.carrier_scanned",
    "refund.issued",
}


class Outcome(Exception):
    """Raised inside an event's savepoint to end its staging with a state (undoing its writes)."""

    def __init__(self, state: str, reason: str = "", kind: str = "", **detail: Any) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.kind = kind
        self.detail = detail


@dataclass
class Failure:
    event: SourceEvent
    kind: str
    message: str
    subject_key: str
    subject_label: str
    sku: str = ""
    order_number: str = ""
    email: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """What one batch learnt along the way, acted on once at its end."""

    now: datetime
    customers: set[int] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    passed: dict[int, list[str]] = field(default_factory=dict)  # workspace → event keys
    released_refs: dict[int, set[str]] = field(default_factory=dict)
    released_entities: dict[int, set[str]] = field(default_factory=dict)
    scanned_orders: set[int] = field(default_factory=set)
    catalogue: dict[int, bool] = field(default_factory=dict)
    aliases: dict[int, dict[tuple[int | None, str], str]] = field(default_factory=dict)
    products: set[int] = field(default_factory=set)  # product events staged in this batch
    cache: StateCache | None = None  # the batch's state, read up front (the fast path only)
    wrote: bool = False  # the event being staged wrote to the database (the fast path only)


class _Abort(Exception):
    """The fast path met what only a savepoint can undo: the batch runs again on the safe path."""


@dataclass
class StateCache:
    """The rows a batch's events name, read in a few queries before its first event and kept in
    step with every write the batch makes. Valid only while nothing the batch wrote is undone,
    which the fast path guarantees (any event that would need undoing aborts the whole batch)."""

    customers: dict[int, Customer] = field(default_factory=dict)  # by pk: one instance each
    by_email: dict[tuple[int, str], int | None] = field(default_factory=dict)
    by_source_id: dict[tuple[int, str, str], int | None] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)  # by pk, locked
    order_refs: set[tuple[int, str, str]] = field(default_factory=set)  # (ws, join key, ref) read
    # PostgreSQL: new customers and orders take ids from their sequences and are inserted in
    # one statement each at the end of the batch (foreign keys are checked at commit).
    defer_inserts: bool = False
    new_ids: dict[str, list[int]] = field(default_factory=dict)
    pending: dict[str, dict[int, Any]] = field(default_factory=dict)
    new_keys: dict[tuple[int, str, str], Customer] = field(default_factory=dict)  # source ids

    def is_pending(self, obj: Any) -> bool:
        return obj.pk is not None and obj.pk in self.pending.get(obj._meta.label, {})

    def add_pending(self, obj: Any) -> None:
        """Give a new row its id now and insert it at the end of the batch."""
        label = obj._meta.label
        pool = self.new_ids.setdefault(label, [])
        if not pool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                    [obj._meta.db_table, obj._meta.pk.column, BATCH_SIZE],
                )
                pool.extend(sorted((row[0] for row in cursor.fetchall()), reverse=True))
        obj.pk = pool.pop()
        self.pending.setdefault(label, {})[obj.pk] = obj

    # Shipments, refunds, products and stock levels the batch names, by natural key (None: read
    # and absent), with every refund of the orders read and every delta after each level's
    # snapshot: the rows their events look up, read up front (locked) instead of one by one.
    shipments: dict[tuple[int, str], Shipment | None] = field(default_factory=dict)
    refunds: dict[tuple[int, str], Refund | None] = field(default_factory=dict)
    refunds_of_orders: set[int] = field(default_factory=set)  # orders whose refunds are all here
    products: dict[tuple[int, str], Product | None] = field(default_factory=dict)
    levels: dict[tuple[int, str, str], StockLevel | None] = field(default_factory=dict)
    deltas: dict[tuple[int, str, str], list[StockDelta]] = field(default_factory=dict)
    # Rows written by the batch: new ones inserted together at its end, changed ones updated
    # together (one pipelined UPDATE per model) at its end.
    new_rows: dict[str, dict[int, Any]] = field(default_factory=dict)  # by id(obj)
    dirty: dict[str, dict[int, Any]] = field(default_factory=dict)  # by pk

    def write(self, obj: Any) -> None:
        """What obj.save() would write, at the end of the batch."""
        label = obj._meta.label
        if obj.pk is None:
            self.new_rows.setdefault(label, {})[id(obj)] = obj
        elif not self.is_pending(obj):
            self.dirty.setdefault(label, {})[obj.pk] = obj

    def flush(self) -> None:
        """Insert the new rows (customers, orders, then what refers to them), then update the
        changed ones."""
        inserted: tuple[tuple[type[Model], dict[str, dict[int, Any]]], ...] = (
            (Customer, self.pending),
            (Order, self.pending),
            (Shipment, self.new_rows),
            (Refund, self.new_rows),
            (Product, self.new_rows),
            (StockLevel, self.new_rows),
            (StockDelta, self.new_rows),
        )
        for model, rows_of in inserted:
            rows = list(rows_of.pop(model._meta.label, {}).values())
            if rows:
                model._default_manager.bulk_create(rows, batch_size=500)
            if model is Customer:
                self._insert_keys()
        for label in list(self.dirty):  # orders, shipments, refunds, products, stock levels
            _update_rows(list(self.dirty.pop(label).values()))

    def _insert_keys(self) -> None:
        """The source customer ids the batch met first, in one statement; a key another worker
        inserted meanwhile (for another customer) aborts the batch to the safe path."""
        if not self.new_keys:
            return
        keys, self.new_keys = self.new_keys, {}
        CustomerKey.objects.bulk_create(
            [
                CustomerKey(
                    workspace_id=ws,
                    source_system=system,
                    source_customer_id=source_id,
                    customer_id=customer.pk,
                )
                for (ws, system, source_id), customer in sorted(keys.items())
            ],
            ignore_conflicts=True,
            batch_size=500,
        )
        by_group: dict[tuple[int, str], list[str]] = {}
        for ws, system, source_id in keys:
            by_group.setdefault((ws, system), []).append(source_id)
        for (ws, system), ids in by_group.items():
            stored = CustomerKey.objects.filter(
                workspace_id=ws, source_system=system, source_customer_id__in=ids
            ).values_list("source_customer_id", "customer_id")
            for source_id, customer_id in stored:
                if keys[(ws, system, source_id)].pk != customer_id:
                    raise _Abort(f"customer key {system}:{source_id} taken meanwhile")

    def customer(self, pk: int | None) -> Customer | None:
        return self.customers.get(pk) if pk is not None else None

    def add_customer(self, customer: Customer) -> Customer:
        kept = self.customers.setdefault(customer.pk, customer)
        if kept.email:
            self.by_email[(kept.workspace_id, kept.email)] = kept.pk
        return kept

    # (ws, join key, value) → pks of the orders holding it, kept by keep_order after each write
    by_ref: dict[tuple[int, str, str], set[int]] = field(default_factory=dict)
    refs_of: dict[int, tuple[tuple[int, str, str], ...]] = field(default_factory=dict)

    def keep_order(self, order: Order) -> Order:
        kept = self.orders.setdefault(order.pk, order)
        for ref in self.refs_of.get(kept.pk, ()):
            self.by_ref[ref].discard(kept.pk)
        refs = tuple(
            (kept.workspace_id, join_key, getattr(kept, join_key))
            for join_key in (Flow.JoinKey.ORDER_NUMBER, Flow.JoinKey.CHANNEL_ORDER_REF)
        )
        for ref in refs:
            self.by_ref.setdefault(ref, set()).add(kept.pk)
        self.refs_of[kept.pk] = refs
        return kept

    def find_order(self, workspace_id: int, join_key: str, ref: str) -> tuple[bool, Order | None]:
        """(known, order): the first order by pk whose join value is `ref`, when the batch read
        every order with that value."""
        if (workspace_id, join_key, ref) not in self.order_refs:
            return False, None
        pks = self.by_ref.get((workspace_id, join_key, ref))
        return True, self.orders[min(pks)] if pks else None


def _update_rows(objs: list[Any]) -> None:
    """Write every field of rows the batch changed, as save() would (auto_now included)."""
    meta = objs[0]._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    for f in fields:
        if getattr(f, "auto_now", False):
            for obj in objs:
                f.pre_save(obj, False)
    bulk_set(objs, [f.name for f in fields])


def _read_rows(cache: StateCache, events: list[SourceEvent]) -> None:
    """The shipments, refunds, products and stock levels the batch's events name, locked, in a
    query each (and the refunds of the orders read, and the deltas after each level's
    snapshot)."""
    shipment_keys: dict[int, set[str]] = {}
    refund_keys: dict[int, set[str]] = {}
    skus: dict[int, set[str]] = {}
    levels: dict[int, set[tuple[str, str]]] = {}
    for event in events:
        data, ws = event.data, event.workspace_id
        kind = event.event_type
        if kind.startswith("shipment.") and data.get("shipment_key"):
            shipment_keys.setdefault(ws, set()).add(str(data["shipment_key"]))
        elif kind == "refund.issued" and data.get("refund_key"):
            refund_keys.setdefault(ws, set()).add(str(data["refund_key"]))
        elif kind == "product.updated":
            skus.setdefault(ws, set()).add(clean_sku(data.get("sku")))
        elif kind == "stock.changed":
            location = data.get("location") or {}
            if isinstance(location, dict) and "key" in location:
                levels.setdefault(ws, set()).add((clean_sku(data.get("sku")), str(location["key"])))
    for ws, keys in shipment_keys.items():
        cache.shipments.update({(ws, key): None for key in keys})
        for shipment in Shipment.objects.select_for_update().filter(
            workspace_id=ws, shipment_key__in=sorted(keys)
        ):
            cache.shipments[(ws, shipment.shipment_key)] = shipment
    if refund_keys:  # and every refund of the orders read, for their sums
        order_pks = sorted(pk for pk in cache.orders if not cache.is_pending(cache.orders[pk]))
        refund_q = Q(order_id__in=order_pks)
        for ws, keys in refund_keys.items():
            cache.refunds.update({(ws, key): None for key in keys})
            refund_q |= Q(workspace_id=ws, refund_key__in=sorted(keys))
        for refund in Refund.objects.select_for_update().filter(refund_q).order_by("pk"):
            cache.refunds[(refund.workspace_id, refund.refund_key)] = refund
        cache.refunds_of_orders |= set(cache.orders)
    for ws, wanted in skus.items():
        cache.products.update({(ws, sku): None for sku in wanted})
        for product in Product.objects.select_for_update().filter(
            workspace_id=ws, sku__in=sorted(wanted)
        ):
            cache.products[(ws, product.sku)] = product
    for ws, pairs in levels.items():
        for sku, location in pairs:
            cache.levels[(ws, sku, location)] = None
            cache.deltas[(ws, sku, location)] = []
        found = StockLevel.objects.select_for_update().filter(
            workspace_id=ws,
            sku__in=sorted({sku for sku, _ in pairs}),
            location_key__in=sorted({loc for _, loc in pairs}),
        )
        by_pk: dict[int, tuple[int, str, str]] = {}
        for level in found.order_by("pk"):
            key = (ws, level.sku, level.location_key)
            if key in cache.levels:
                cache.levels[key] = level
                by_pk[level.pk] = key
        after = Q()
        for pk, key in by_pk.items():
            read = cache.levels[key]
            assert read is not None
            if read.snapshot_as_of:
                after |= Q(level_id=pk, as_of__gt=read.snapshot_as_of)
            else:
                after |= Q(level_id=pk)
        if by_pk:
            for delta in StockDelta.objects.filter(after).order_by("pk"):
                cache.deltas[by_pk[delta.level_id]].append(delta)


def _read_state(events: list[SourceEvent]) -> StateCache:
    """Everything the batch's customer and order events will look up, in four queries: customers
    by email and by source id, and the orders by each flow's join key (locked, as find_order
    locks them one by one)."""
    cache = StateCache(defer_inserts=connection.vendor == "postgresql")
    emails: dict[int, set[str]] = {}
    source_ids: dict[tuple[int, str], set[str]] = {}
    refs: dict[tuple[int, str], set[str]] = {}
    for event in events:
        identity = event.envelope.get("identity") or {}
        if not isinstance(identity, dict):
            continue
        email = normalise_email(identity.get("email") or identity.get("email_raw"))
        if email:
            emails.setdefault(event.workspace_id, set()).add(email)
        source_id = identity.get("source_customer_id") or (
            event.data.get("customer_key") if event.event_type == "customer.upserted" else None
        )
        if source_id:
            source_ids.setdefault((event.workspace_id, event.source_system), set()).add(
                str(source_id)
            )
        if event.order_ref and event.flow is not None:
            refs.setdefault((event.workspace_id, event.flow.join_key), set()).add(event.order_ref)
    for workspace_id, wanted in emails.items():
        for email in wanted:
            cache.by_email[(workspace_id, email)] = None
        for customer in Customer.objects.filter(
            workspace_id=workspace_id, email__in=sorted(wanted)
        ).exclude(email=""):
            cache.add_customer(customer)
    for (workspace_id, system), wanted in source_ids.items():
        for source_id in wanted:
            cache.by_source_id[(workspace_id, system, source_id)] = None
        for key in CustomerKey.objects.select_related("customer").filter(
            workspace_id=workspace_id, source_system=system, source_customer_id__in=sorted(wanted)
        ):
            kept = cache.add_customer(key.customer)
            cache.by_source_id[(workspace_id, system, key.source_customer_id)] = kept.pk
    for (workspace_id, join_key), wanted in refs.items():
        qs = Order.objects.select_for_update().filter(
            workspace_id=workspace_id, **{f"{join_key}__in": sorted(wanted)}
        )
        for order in qs.exclude(**{join_key: ""}).order_by("pk"):
            cache.keep_order(order)
        cache.order_refs |= {(workspace_id, join_key, ref) for ref in wanted}
    _read_rows(cache, events)
    return cache


# ---------------------------------------------------------------------------------------------
# Running: claim, stage, record.


def run_staging(
    *,
    flow_id: int | None = None,
    batch_size: int = BATCH_SIZE,
    time_budget: float | None = None,
    claimed: list[int] | None = None,
) -> int:
    """Stage due events (of one flow, or all) until none is due or the time budget is spent.
    Returns how many were staged; `claimed`, if given, collects the ids of the events claimed
    (for planning to take those that became READY by key). Safe to run on any number of workers
    at once."""
    started = time.monotonic()
    total = 0
    while True:
        owner = worker_token()
        qs = SourceEvent.objects.due_for_staging().order_by("next_attempt_at", "pk")
        if flow_id is not None:
            qs = qs.filter(flow_id=flow_id)
        ids = claim_ids(qs, limit=batch_size, owner=owner, lease_seconds=LEASE_SECONDS)
        if not ids:
            return total
        if claimed is not None:
            claimed.extend(ids)
        total += stage_batch(ids, owner)
        if time_budget is not None and time.monotonic() - started > time_budget:
            return total


STAGE_ACTIVE_SECONDS = 15.0  # a staging task that claimed within this long is still at work
STAGE_LOCK = 0x53544147  # pg advisory lock class of "one staging task per flow"


def _staging_elsewhere(flow_id: int) -> bool:
    """Whether another worker is staging this flow: it claimed events within the last
    `STAGE_ACTIVE_SECONDS` (a live task claims a batch every few seconds; a dead one's leases
    stop counting well before they expire)."""
    now = timezone.now()
    return (
        SourceEvent.objects.filter(
            flow_id=flow_id,
            state__in=(SourceEvent.State.RECEIVED, SourceEvent.State.HELD),
            next_attempt_at__lte=now,
            lease_until__gt=now + timedelta(seconds=LEASE_SECONDS - STAGE_ACTIVE_SECONDS),
        )
        .exclude(lease_owner="")
        .exists()
    )


@contextmanager
def flow_staging_lock(flow_id: int | None) -> Iterator[bool]:
    """Whether this worker may stage the flow: on PostgreSQL a session advisory lock per flow
    (freed with the session if the worker dies); elsewhere, that no other worker claimed lately."""
    if flow_id is None:
        yield True
        return
    if connection.vendor != "postgresql":
        yield not _staging_elsewhere(flow_id)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [STAGE_LOCK, flow_id])
        took = bool(cursor.fetchone()[0])
    try:
        yield took
    finally:
        if took:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [STAGE_LOCK, flow_id])


def staging_due(flow_id: int | None) -> bool:
    """Whether events of the flow (of any flow, when None) are due for staging."""
    qs = SourceEvent.objects.due_for_staging()
    if flow_id is not None:
        qs = qs.filter(flow_id=flow_id)
    # In the claim's order, so PostgreSQL reads staging's index (`event_stage_due`): as a bare
    # EXISTS it chooses the flow's index of every waiting event, READY ones included, and steps
    # over the whole outbox.
    return bool(qs.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:1])


def _load(ids: list[int], owner: str) -> list[SourceEvent]:
    events = list(
        SourceEvent.objects.filter(pk__in=ids, lease_owner=owner)
        .select_related("flow", "workspace")
        .order_by("entity_key", "source_version", "pk")
    )
    # The catalogue first, so a batch's orders are checked against its products.
    events.sort(key=lambda e: e.event_type != "product.updated")
    return events


def stage_batch(ids: Iterable[int], owner: str) -> int:
    """Stage the claimed events in one transaction. The fast path reads the state the batch
    names up front and stages without a savepoint per event; an event that would need one (it
    wrote and then ended otherwise than as written, or raised) sends the whole batch, undone, to
    the safe path: a savepoint per event, every lookup a query, as before."""
    ids = list(ids)
    events = _load(ids, owner)
    try:
        with transaction.atomic():
            batch = Batch(now=timezone.now())
            batch.cache = _read_state(events)
            _stage_all(events, batch, fast=True)
        return len(events)
    except (_Abort, DatabaseError):  # DatabaseError: e.g. a deadlock reading the state
        log.debug("staging batch of %s events: the safe path", len(events), exc_info=True)
    events = _load(ids, owner)
    with transaction.atomic():
        _stage_all(events, Batch(now=timezone.now()), fast=False)
    return len(events)


EVENT_FIELDS = (
    "state",
    "in_outbox",
    "reason",
    "hold",
    "hold_deadline",
    "next_attempt_at",
    "lease_owner",
    "lease_until",
    "staged_at",
    "failed_kind",
    "lane",
    "customer",
    "order",
    "order_ref",
)


def _note_writes(batch: Batch) -> Any:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.lstrip()[:6].upper().startswith("SELECT"):
            batch.wrote = True
        return execute(sql, params, many, context)

    return wrapper


def _stage_all(events: list[SourceEvent], batch: Batch, *, fast: bool) -> None:
    batch.products = {e.pk for e in events if e.event_type == "product.updated"}
    for event in events:
        had_failed = bool(event.failed_kind)
        event.failed_kind = ""
        if fast:
            batch.wrote = False
            try:
                with connection.execute_wrapper(_note_writes(batch)):
                    stage_event(event, batch)
            except Outcome as outcome:
                if batch.wrote:
                    raise _Abort from outcome  # its writes need undoing
                _apply_outcome(event, outcome, batch)
            except Exception as exc:
                raise _Abort from exc
        else:
            try:
                with transaction.atomic():
                    stage_event(event, batch)
            except Outcome as outcome:
                _apply_outcome(event, outcome, batch)
            except DatabaseError as exc:  # a race on a unique key: try again shortly
                log.info("staging %s raced: %s", event.pk, exc)
                _retry_later(event, batch, str(exc))
            except Exception as exc:
                log.exception("staging event %s failed", event.pk)
                _retry_later(event, batch, f"{type(exc).__name__}: {exc}")
        event.lease_owner = ""
        event.lease_until = None
        if had_failed and event.state != State.FAILED:
            batch.passed.setdefault(event.workspace_id, []).append(event.key)
    if batch.cache is not None:
        batch.cache.flush()
    batch.cache = None
    recompute_aggregates(batch.customers, batch.now)
    bulk_set(events, EVENT_FIELDS)
    for failure in batch.failures:
        _record(failure)
    for workspace_id, keys in batch.passed.items():
        clear_occurrences(Workspace(pk=workspace_id), keys, stage=STAGE)
    _release(batch)


def _forget_failures(event: SourceEvent, batch: Batch) -> None:
    batch.failures = [f for f in batch.failures if f.event is not event]


def _retry_later(event: SourceEvent, batch: Batch, reason: str) -> None:
    _forget_failures(event, batch)
    delay = min(5 * 2 ** min(event.attempts, 10), 3600)
    event.state = State.RECEIVED if event.state != State.HELD else State.HELD
    event.reason = f"Retrying: {reason}"[:2000]
    event.next_attempt_at = batch.now + timedelta(seconds=delay)


def _apply_outcome(event: SourceEvent, outcome: Outcome, batch: Batch) -> None:
    """The event's writes were undone; it ends in the outcome's state."""
    if outcome.state == State.FAILED:
        failed = _failed(batch, event)
        if not outcome.reason and failed is not None:
            outcome.reason = failed.reason
    else:
        _forget_failures(event, batch)
    event.state = outcome.state
    event.reason = outcome.reason
    if outcome.state in (State.READY, State.SKIPPED, State.FAILED):
        event.staged_at = batch.now
        event.hold = Hold.NONE if outcome.state != State.FAILED else event.hold
    if outcome.state == State.FAILED:
        event.failed_kind = outcome.kind


def _record(failure: Failure) -> None:
    event = failure.event
    flow = event.flow
    occurrence = record_occurrence(
        workspace=event.workspace,
        kind=failure.kind,
        event_key=event.key,
        stage=STAGE,
        message=failure.message,
        flow_key=flow.key if flow else "",
        flow_label=flow.name if flow else "",
        subject_key=failure.subject_key,
        subject_label=failure.subject_label,
        detail={"event_id": event.pk, "event_type": event.event_type, **failure.detail},
        source_event_id=event.source_event_id,
        order_number=failure.order_number,
        sku=failure.sku,
        email=failure.email,
    )
    if occurrence.group.state == "ignored":  # the person who ignored the group decided
        SourceEvent.objects.filter(pk=event.pk).update(
            state=State.SKIPPED, reason=f"Ignored in the inbox ({failure.kind})."
        )


def _release(batch: Batch) -> None:
    """Orphans whose order arrived, and dispatches whose scan arrived, are due again now."""
    flows: set[int] = set()
    for workspace_id, refs in batch.released_refs.items():
        refs.discard("")
        if refs:
            qs = SourceEvent.objects.filter(
                workspace_id=workspace_id, state=State.HELD, hold=Hold.ORPHAN, order_ref__in=refs
            )
            flows |= {f for f in qs.values_list("flow_id", flat=True) if f is not None}
            qs.update(next_attempt_at=batch.now)
    for workspace_id, keys in batch.released_entities.items():
        qs = SourceEvent.objects.filter(
            workspace_id=workspace_id, state=State.HELD, hold=Hold.ORPHAN, entity_key__in=keys
        )
        flows |= {f for f in qs.values_list("flow_id", flat=True) if f is not None}
        qs.update(next_attempt_at=batch.now)
    if batch.scanned_orders:
        qs = SourceEvent.objects.filter(
            state=State.HELD, hold=Hold.CARRIER_SCAN, order_id__in=batch.scanned_orders
        )
        flows |= {f for f in qs.values_list("flow_id", flat=True) if f is not None}
        qs.update(next_attempt_at=batch.now)
    if flows:
        wake_staging(flows, lane="realtime")


# ---------------------------------------------------------------------------------------------
# One event.


def stage_event(event: SourceEvent, batch: Batch) -> None:
    """Bring one event into the state; ends by raising Outcome (READY, HELD, SKIPPED, FAILED)."""
    flow = event.flow
    if flow is None:
        raise Outcome(State.SKIPPED, "No flow takes this event any more.")
    event.lane = (
        SourceEvent.Lane.BULK
        if event.is_backfill or event.event_type not in REALTIME_TYPES
        else SourceEvent.Lane.REALTIME
    )
    handler = HANDLERS.get(event.event_type)
    if handler is None:
        raise Outcome(State.SKIPPED, f"No staging for {event.event_type}.")
    event.state = State.RECEIVED
    event.reason = ""
    handler(event, flow, batch)
    _finish(event, batch)


def _fail(event: SourceEvent, batch: Batch, kind: str, message: str, **fields: Any) -> None:
    """Remember a validation failure (recorded at the end of the batch)."""
    batch.failures.append(Failure(event, kind, message, **fields))


def _failed(batch: Batch, event: SourceEvent) -> Outcome | None:
    mine = [f for f in batch.failures if f.event is event]
    if not mine:
        return None
    return Outcome(State.FAILED, "; ".join(f.message for f in mine)[:2000], mine[0].kind)


def _finish(event: SourceEvent, batch: Batch) -> None:
    """The handler wrote its state: FAILED when validation failed (the writes stand, delivery
    waits for the fix), HELD when it chose to hold, else READY."""
    outcome = _failed(batch, event)
    if outcome is not None:
        event.state = State.FAILED
        event.failed_kind = outcome.kind
        event.reason = outcome.reason
    elif event.state != State.HELD:
        event.state = State.READY
        event.hold = Hold.NONE
    event.in_outbox = False  # staged again (a release, a retry): planned afresh
    if event.state != State.HELD:
        event.staged_at = batch.now


# --- identities ------------------------------------------------------------------------------


_CUSTOMER_FIELDS = (
    "email",
    "email_raw",
    "previous_emails",
    "phone",
    "first_name",
    "last_name",
    "is_guest",
    "source_version",
)


def _customer_fields(customer: Customer) -> tuple[Any, ...]:
    return tuple(getattr(customer, name) for name in _CUSTOMER_FIELDS)


def save_customer(
    customer: Customer, before: tuple[Any, ...] | None, batch: Batch | None = None
) -> None:
    """Write what staging changed on a customer it read (`before`: the fields as read): nothing
    when nothing changed, and never the fields other parts own (the DotDigital contact id,
    which delivery sets, and the aggregates, which recompute_aggregates sets)."""
    if batch is not None and batch.cache is not None and batch.cache.is_pending(customer):
        batch.wrote = True
        return  # inserted whole at the end of the batch
    if before is None:
        customer.save()
        return
    changed = [
        name
        for name, old, new in zip(_CUSTOMER_FIELDS, before, _customer_fields(customer), strict=True)
        if old != new
    ]
    if changed:
        customer.save(update_fields=changed)


def _customer_by_source_id(
    batch: Batch, workspace_id: int, system: str, source_id: str
) -> Customer | None:
    cache = batch.cache
    if cache is not None and (workspace_id, system, source_id) in cache.by_source_id:
        return cache.customer(cache.by_source_id[(workspace_id, system, source_id)])
    key = (
        CustomerKey.objects.select_related("customer")
        .filter(workspace_id=workspace_id, source_system=system, source_customer_id=source_id)
        .first()
    )
    if cache is not None:
        customer = cache.add_customer(key.customer) if key else None
        cache.by_source_id[(workspace_id, system, source_id)] = customer.pk if customer else None
        return customer
    return key.customer if key else None


def _customer_by_email(batch: Batch, workspace_id: int, email: str) -> Customer | None:
    cache = batch.cache
    if cache is not None and (workspace_id, email) in cache.by_email:
        return cache.customer(cache.by_email[(workspace_id, email)])
    customer = Customer.objects.filter(workspace_id=workspace_id, email=email).first()
    if cache is not None:
        if customer is not None:
            return cache.add_customer(customer)
        cache.by_email[(workspace_id, email)] = None
    return customer


def resolve_customer(
    event: SourceEvent, batch: Batch, *, authoritative: bool = False
) -> Customer | None:
    """The identity an event names: by the source's customer id, else by normalised email.
    A customer.upserted (authoritative) with a new email for a known customer moves that
    customer to the new email, so the DotDigital contact stays the same."""
    envelope = event.envelope
    identity = envelope.get("identity") or {}
    data = event.data
    raw = identity.get("email_raw") or identity.get("email") or ""
    email = normalise_email(identity.get("email") or identity.get("email_raw"))
    source_id = identity.get("source_customer_id") or (
        data.get("customer_key") if event.event_type == "customer.upserted" else None
    )
    is_guest = bool(identity.get("is_guest", data.get("is_guest", False)))
    workspace_id = event.workspace_id
    customer: Customer | None = None
    if source_id:
        customer = _customer_by_source_id(batch, workspace_id, event.source_system, str(source_id))
    if customer is None and email:
        customer = _customer_by_email(batch, workspace_id, email)
    before: tuple[Any, ...] | None = None
    if customer is None:
        if not email and not source_id:
            return None
        customer = Customer(
            workspace_id=workspace_id,
            email=email,
            email_raw=str(raw)[:300],
            phone=str(identity.get("phone_e164") or "")[:40],
            is_guest=is_guest,
        )
        if batch.cache is not None and batch.cache.defer_inserts:
            batch.cache.add_pending(customer)
            batch.wrote = True  # a row the batch will insert: only a rollback undoes it
        else:
            customer.save(force_insert=True)
        before = _customer_fields(customer)
    else:
        before = _customer_fields(customer)
        if email and customer.email != email:
            taken = _customer_by_email(batch, workspace_id, email) is not None
            if not customer.email and not taken:
                customer.email, customer.email_raw = email, str(raw)[:300]
            elif authoritative and not taken:
                customer.previous_emails = [*customer.previous_emails, customer.email]
                customer.email, customer.email_raw = email, str(raw)[:300]
    if not is_guest and customer.is_guest:
        customer.is_guest = False
    old_email = before[0]
    save_customer(customer, before, batch)
    if batch.cache is not None:
        if old_email and old_email != customer.email:
            batch.cache.by_email[(workspace_id, old_email)] = None
        batch.cache.add_customer(customer)
    if source_id:
        cache = batch.cache
        known = (workspace_id, event.source_system, str(source_id))
        if cache is not None and cache.defer_inserts and cache.by_source_id.get(known) is None:
            # Inserted with the batch's new customers at its end (checked there: a key another
            # worker took meanwhile sends the batch to the safe path).
            cache.new_keys[known] = customer
            cache.by_source_id[known] = customer.pk
            batch.wrote = True
        elif cache is None or cache.by_source_id.get(known) is None:
            key, _ = CustomerKey.objects.get_or_create(
                workspace_id=workspace_id,
                source_system=event.source_system,
                source_customer_id=str(source_id),
                defaults={"customer": customer},
            )
            if cache is not None:
                cache.by_source_id[known] = key.customer_id
    batch.customers.add(customer.pk)
    return customer


def _no_email(event: SourceEvent, batch: Batch, order_number: str = "") -> None:
    identity = event.envelope.get("identity") or {}
    _fail(
        event,
        batch,
        "contact_without_email",
        "No email: DotDigital cannot hold a contact for it.",
        subject_key=f"event:{event.pk}",
        subject_label=order_number or identity.get("phone_e164") or event.entity_key,
        order_number=order_number,
        detail={"identity": identity},
    )


def stage_customer(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    identity = event.envelope.get("identity") or {}
    if not normalise_email(identity.get("email") or identity.get("email_raw")):
        existing = resolve_customer(event, batch)
        if existing is None or not existing.email:
            _no_email(event, batch)
            if existing is None:
                raise Outcome(State.FAILED, "No email.", "contact_without_email")
    customer = resolve_customer(event, batch, authoritative=True)
    assert customer is not None
    if customer.source_version and event.source_version < customer.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this customer is staged.")
    data = event.data
    before = _customer_fields(customer)
    customer.first_name = str(data.get("first_name") or customer.first_name)[:120]
    customer.last_name = str(data.get("last_name") or customer.last_name)[:120]
    customer.source_version = event.source_version
    save_customer(customer, before, batch)
    event.customer = customer


def stage_consent(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    customer = resolve_customer(event, batch)
    if customer is None or not customer.email:
        _no_email(event, batch)
        raise Outcome(State.FAILED, "No email.", "contact_without_email")
    event.customer = customer


# --- orders ----------------------------------------------------------------------------------


def find_order(
    event: SourceEvent, flow: Flow, *, lock: bool = True, batch: Batch | None = None
) -> Order | None:
    if not event.order_ref:
        return None
    cache = batch.cache if batch is not None else None
    if cache is not None:
        known, order = cache.find_order(event.workspace_id, flow.join_key, event.order_ref)
        if known:
            return order
    qs = Order.objects.filter(workspace_id=event.workspace_id, **{flow.join_key: event.order_ref})
    if lock:
        qs = qs.select_for_update()
    order = qs.order_by("pk").first()
    if cache is not None and lock:
        if order is not None:
            order = cache.keep_order(order)
        cache.order_refs.add((event.workspace_id, flow.join_key, event.order_ref))
    return order


def _keep_order(batch: Batch, order: Order) -> None:
    """A new order joins the batch's cache (its join values are read from it on each lookup)."""
    if batch.cache is not None and order.pk is not None:
        batch.cache.keep_order(order)


def save_order(batch: Batch, order: Order) -> None:
    """order.save(), or for a new order on the fast path on PostgreSQL: an id now and the row
    with the batch's other new orders at its end."""
    cache = batch.cache
    if cache is not None and cache.defer_inserts and (order.pk is None or cache.is_pending(order)):
        if order.pk is None:
            cache.add_pending(order)
            cache.refunds_of_orders.add(order.pk)  # a new order has no refunds yet
        batch.wrote = True  # a row the batch will insert: only a rollback undoes it
        _keep_order(batch, order)
        return
    if cache is not None and order.pk is not None:
        batch.wrote = True
        cache.write(order)  # updated with the batch's other changed rows at its end
        _keep_order(batch, order)
        return
    new = order.pk is None
    order.save()
    if cache is not None and new:
        cache.refunds_of_orders.add(order.pk)
    _keep_order(batch, order)


def _order_of(batch: Batch, shipment: Shipment) -> Order:
    """The shipment's order: the batch's own instance when it has one (it may be new)."""
    if batch.cache is not None and shipment.order_id in batch.cache.orders:
        return batch.cache.orders[shipment.order_id]
    return shipment.order


def order_total_problem(data: dict[str, Any]) -> str | None:
    """design.md's rule: Σ line totals (which hold line discounts) + shipping − order-level
    discounts (+ tax when prices exclude tax) = grand total, within one minor unit per line."""
    totals = data.get("totals") or {}
    currency = data.get("currency") or ""
    grand = money(totals.get("grand_total"))
    if grand is None:
        return "The order has no grand total."
    lines = data.get("lines") or []
    line_sum = Decimal(0)
    line_discounts = Decimal(0)
    for line in lines:
        total = money(line.get("line_total"))
        if total is None:
            subtotal = money(line.get("line_subtotal"))
            if subtotal is None:
                unit = money(line.get("unit_price")) or Decimal(0)
                subtotal = unit * Decimal(str(line.get("quantity") or 0))
            total = subtotal - (money(line.get("line_discount")) or Decimal(0))
        line_sum += total
        line_discounts += money(line.get("line_discount")) or Decimal(0)
    shipping = money(totals.get("shipping"))
    if shipping is None:
        shipping = money((data.get("shipping") or {}).get("amount")) or Decimal(0)
    discounts = data.get("discounts")
    if isinstance(discounts, list):
        order_discount = sum(
            (money(d.get("amount")) or Decimal(0) for d in discounts if d.get("scope") != "line"),
            Decimal(0),
        )
    else:
        order_discount = max(
            (money(totals.get("discount")) or Decimal(0)) - line_discounts, Decimal(0)
        )
    tax_inclusive = data.get("tax_inclusive", totals.get("tax_inclusive", True))
    expected = line_sum + shipping - order_discount
    if tax_inclusive is False:
        tax = money(totals.get("tax"))
        if tax is None:
            tax = sum((money(line.get("line_tax")) or Decimal(0) for line in lines), Decimal(0)) + (
                money((data.get("shipping") or {}).get("tax")) or Decimal(0)
            )
        expected += tax
    tolerance = minor_unit(currency) * max(1, len(lines))
    if abs(expected - grand) > tolerance:
        return f"Grand total {grand} {currency} but its parts add up to {expected} {currency}."
    return None


def _sku_gaps(event: SourceEvent, flow: Flow, batch: Batch, lines: list[dict[str, Any]]) -> None:
    """After cleaning and aliases, SKUs not in the catalogue (only once it is loaded)."""
    if not catalogue_loaded(event.workspace_id, batch):
        return
    aliases = _aliases(event.workspace_id, batch)
    wanted: dict[str, str] = {}
    for line in lines:
        if line.get("is_non_stock") or not line.get("sku"):
            continue
        cleaned = clean_sku_by_rules(clean_sku(line.get("sku")), flow.sku_cleaning)
        key = sku_match_key(cleaned, flow.sku_case_sensitive)
        target = aliases.get((flow.pk, key)) or aliases.get((None, key))
        wanted[sku_match_key(target, flow.sku_case_sensitive) if target else key] = cleaned
    if not wanted:
        return
    field_name = "sku" if flow.sku_case_sensitive else "sku_key"
    known = set(
        Product.objects.filter(
            workspace_id=event.workspace_id, **{f"{field_name}__in": list(wanted)}
        ).values_list(field_name, flat=True)
    )
    if batch.cache is not None:  # the batch's own products, not inserted yet
        known |= {
            getattr(product, field_name)
            for (ws, _), product in batch.cache.products.items()
            if ws == event.workspace_id and product is not None
        }
    for key, cleaned in wanted.items():
        if key not in known:
            _fail(
                event,
                batch,
                "sku_mapping_gap",
                f"SKU {cleaned!r} is not in the catalogue.",
                subject_key=f"sku:{key}",
                subject_label=cleaned,
                sku=cleaned,
                order_number=str(event.data.get("order_number") or event.order_ref),
            )


def catalogue_loaded(workspace_id: int, batch: Batch) -> bool:
    """Loaded once a flow mastering products marked its first full snapshot, and every product
    event it received by then is staged."""
    if workspace_id not in batch.catalogue:
        masters = list(
            Flow.objects.filter(
                workspace_id=workspace_id, masters_products=True, catalogue_loaded_at__isnull=False
            ).values_list("pk", "catalogue_loaded_at")
        )
        loaded = any(
            not SourceEvent.objects.filter(
                flow_id=pk,
                event_type="product.updated",
                state=State.RECEIVED,
                received_at__lte=at,
            )
            .exclude(pk__in=batch.products)
            .exists()
            for pk, at in masters
        )
        batch.catalogue[workspace_id] = loaded
    return batch.catalogue[workspace_id]


def _aliases(workspace_id: int, batch: Batch) -> dict[tuple[int | None, str], str]:
    if workspace_id not in batch.aliases:
        batch.aliases[workspace_id] = {
            (flow_id, alias_key): sku
            for flow_id, alias_key, sku in SkuAlias.objects.filter(
                workspace_id=workspace_id
            ).values_list("flow_id", "alias_key", "sku")
        }
    return batch.aliases[workspace_id]


def stage_order(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    data = event.data
    workspace = event.workspace
    identity = event.envelope.get("identity") or {}
    number = str(data.get("order_number") or "")
    carries_money = data.get("carries_money") is not False
    if not carries_money:
        held = find_order(event, flow, batch=batch)
        if held is not None and held.has_body and held.carries_money:
            _join_copy(event, held, batch)
            return
    currency = str(data.get("currency") or "")
    if currency != workspace.currency:
        _fail(
            event,
            batch,
            "currency_mismatch",
            f"Order {number} is in {currency}, the workspace keeps {workspace.currency}.",
            subject_key=f"currency:{currency}",
            subject_label=currency,
            order_number=number,
        )
        raise Outcome(State.FAILED, "", "currency_mismatch")
    problem = order_total_problem(data)
    if problem:
        _fail(
            event,
            batch,
            "order_total_mismatch",
            problem,
            subject_key=f"order:{number}",
            subject_label=number,
            order_number=number,
            detail={"totals": data.get("totals")},
        )
        raise Outcome(State.FAILED, problem, "order_total_mismatch")
    is_guest = bool(identity.get("is_guest", data.get("is_guest", False)))
    if is_guest and flow.guest_policy == Flow.GuestPolicy.EXCLUDE:
        _fail(
            event,
            batch,
            "guest_policy",
            f"Guest order {number} excluded by the flow's guest policy.",
            subject_key="guest",
            subject_label="Guest orders",
            order_number=number,
        )
        raise Outcome(State.FAILED, "", "guest_policy")
    order = find_order(event, flow, batch=batch)
    if (
        order is not None
        and order.revision
        and event.source_version < order.revision
        and (order.carries_money or not carries_money)  # money replaces a copy, whatever its age
    ):
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this order is staged.")
    customer = resolve_customer(event, batch)
    if order is None:
        order = Order(workspace_id=event.workspace_id)
    previous_customer = order.customer_id
    totals = data.get("totals") or {}
    lines = [
        {**line, "sku": clean_sku(line.get("sku")), "sku_raw": line.get("sku_raw", line.get("sku"))}
        for line in data.get("lines") or []
    ]
    links = event.envelope.get("links") or {}
    order.order_number = number or order.order_number
    order.channel_order_ref = str(
        data.get("channel_order_ref") or links.get("channel_order_ref") or order.channel_order_ref
    )
    order.source_keys = sorted({*order.source_keys, str(data.get("order_key"))})
    order.customer = customer or order.customer
    order.email = customer.email if customer else order.email
    order.is_guest = is_guest
    order.has_body = True
    order.carries_money = carries_money
    order.revision = event.source_version
    order.placed_at = parse_time(data.get("placed_at"))
    order.currency = currency
    order.tax_inclusive = data.get("tax_inclusive", totals.get("tax_inclusive", True)) is not False
    order.lines = lines
    order.subtotal = money(totals.get("subtotal"))
    order.discount = money(totals.get("discount"))
    order.shipping = money(totals.get("shipping"))
    order.tax = money(totals.get("tax"))
    order.grand_total = money(totals.get("grand_total"))
    if order.status_version is None or event.source_version >= order.status_version:
        _set_status(order, data.get("status") or {})
        order.status_version = event.source_version
    save_order(batch, order)
    if previous_customer and previous_customer != order.customer_id:
        batch.customers.add(previous_customer)
    event.order = order
    event.customer = order.customer
    batch.released_refs.setdefault(event.workspace_id, set()).update(
        {order.order_number, order.channel_order_ref}
    )
    if customer is None or not customer.email:
        _no_email(event, batch, number)
    _sku_gaps(event, flow, batch, lines)


def _join_copy(event: SourceEvent, order: Order, batch: Batch) -> None:
    """A warehouse's copy of an order whose money-carrying body (the ERP's) is held: joined to it
    (its key, and the channel reference if the order has none) without touching the ERP's number,
    lines, money or status, so one order stays one record (sources.md §12: the WMS carries no
    money). Status changes still come through order.status_changed and shipments."""
    data = event.data
    links = event.envelope.get("links") or {}
    order.source_keys = sorted({*order.source_keys, str(data.get("order_key"))})
    order.channel_order_ref = order.channel_order_ref or str(
        data.get("channel_order_ref") or links.get("channel_order_ref") or ""
    )
    save_order(batch, order)
    event.order = order
    event.customer = order.customer
    event.reason = "A warehouse copy of an order held with the ERP's money: joined to it."
    batch.released_refs.setdefault(event.workspace_id, set()).update(
        {order.order_number, order.channel_order_ref}
    )


def _set_status(order: Order, status: dict[str, Any]) -> None:
    if status.get("lifecycle"):
        order.lifecycle = status["lifecycle"]
    if status.get("fulfilment"):
        order.fulfilment = status["fulfilment"]
    if status.get("financial") and status["financial"] != "unknown":
        order.financial = status["financial"]


# A hold is released by the batch that stages what it waits for (`_release`), but that batch only
# sees holds committed before its own update: a hold written by a concurrent transaction (the ERP
# and the WMS flows stage in parallel) misses its release and would sleep until its deadline
# (6 h by default). So a young hold looks again every HOLD_RECHECK until HOLD_RACE_WINDOW has
# passed since the event arrived, then waits for its deadline (or a release) as before.
HOLD_RECHECK = timedelta(seconds=20)
HOLD_RACE_WINDOW = timedelta(minutes=10)


def _next_look(event: SourceEvent, batch: Batch) -> datetime:
    deadline = event.hold_deadline or batch.now
    if batch.now - event.received_at < HOLD_RACE_WINDOW:
        return min(deadline, batch.now + HOLD_RECHECK)
    return deadline


def _hold_orphan(event: SourceEvent, flow: Flow, batch: Batch, waits_for: str) -> None:
    """No order yet: wait (with a deadline), or open orphan_expired once it has passed."""
    if event.hold_deadline is None or event.hold != Hold.ORPHAN:
        event.hold_deadline = event.received_at + timedelta(seconds=flow.orphan_hold_seconds)
    if batch.now >= event.hold_deadline:
        _fail(
            event,
            batch,
            "orphan_expired",
            f"{waits_for} never arrived before the hold's deadline.",
            subject_key=f"order:{event.order_ref}",
            subject_label=event.order_ref or event.entity_key,
            order_number=event.order_ref,
            detail={"waited_for": waits_for, "deadline": event.hold_deadline.isoformat()},
        )
        event.hold = Hold.ORPHAN
        raise Outcome(State.FAILED, f"Expired waiting for {waits_for}.", "orphan_expired")
    event.hold = Hold.ORPHAN
    event.next_attempt_at = _next_look(event, batch)
    raise Outcome(
        State.HELD, f"Waiting for {waits_for} (until {event.hold_deadline:%Y-%m-%d %H:%M} UTC)."
    )


def _parent_order(event: SourceEvent, flow: Flow, batch: Batch) -> Order:
    order = find_order(event, flow, batch=batch)
    if order is not None:
        return order
    waits_for = f"order {event.order_ref or event.data.get('order_key')}"
    if flow.hold_orphans or not event.order_ref:
        _hold_orphan(event, flow, batch, waits_for)
    # No hold: the order starts here, and the flow carrying money fills it in when it comes.
    join = {flow.join_key: event.order_ref}
    order = Order(
        workspace_id=event.workspace_id,
        source_keys=[str(event.data.get("order_key"))],
        **join,
    )
    save_order(batch, order)
    return order


def stage_status(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    order = _parent_order(event, flow, batch)
    if order.status_version and event.source_version < order.status_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer status of this order is staged.")
    _set_status(order, event.data.get("to") or {})
    order.status_version = event.source_version
    save_order(batch, order)
    _link(event, order, batch)


def _link(event: SourceEvent, order: Order, batch: Batch) -> None:
    event.order = order
    event.customer_id = order.customer_id
    event.hold = Hold.NONE
    if order.customer_id:
        batch.customers.add(order.customer_id)


def stage_dispatch(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    data = event.data
    order = _parent_order(event, flow, batch)
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
    _link(event, order, batch)
    batch.released_entities.setdefault(event.workspace_id, set()).add(event.entity_key)
    if flow.hold_dispatch_for_scan and shipment.first_scan_at is None:
        if event.hold != Hold.CARRIER_SCAN or event.hold_deadline is None:
            event.hold_deadline = event.received_at + timedelta(seconds=flow.scan_hold_seconds)
        if batch.now < event.hold_deadline:
            # Held with the state written: the dispatch date counts, only the trigger waits.
            event.state = State.HELD
            event.hold = Hold.CARRIER_SCAN
            event.next_attempt_at = _next_look(event, batch)
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


def save_row(batch: Batch, obj: Any) -> None:
    """obj.save(), or on the fast path: written with the batch's other rows at its end."""
    if batch.cache is None:
        obj.save()
        return
    batch.wrote = True  # only a rollback of the batch undoes it
    batch.cache.write(obj)


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
        _hold_orphan(
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
    _link(event, _order_of(batch, shipment), batch)


def stage_scan(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    shipment = _hold_for_shipment(event, flow, batch)
    scanned_at = parse_time(event.data.get("scanned_at"))
    if shipment.first_scan_at is None or (scanned_at and scanned_at < shipment.first_scan_at):
        shipment.first_scan_at = scanned_at
    shipment.scan_status = str(event.data.get("scan_status") or "")
    save_row(batch, shipment)
    _link(event, _order_of(batch, shipment), batch)
    # Dispatch triggers held for this scan go now.
    batch.scanned_orders.add(shipment.order_id)


def stage_refund(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    data = event.data
    order = _parent_order(event, flow, batch)
    amount = money(data.get("amount"))
    currency = str((data.get("amount") or {}).get("currency") or "")
    if currency != event.workspace.currency:
        _fail(
            event,
            batch,
            "currency_mismatch",
            f"Refund in {currency}, the workspace keeps {event.workspace.currency}.",
            subject_key=f"currency:{currency}",
            subject_label=currency,
            order_number=order.order_number,
        )
        raise Outcome(State.FAILED, "", "currency_mismatch")
    key = str(data["refund_key"])
    refund = _refund_by_key(event, batch, key)
    if refund is not None and event.source_version < refund.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this refund is staged.")
    if refund is None:
        refund = Refund(workspace_id=event.workspace_id, refund_key=key)
    _refund_within_total(event, order, refund, amount or Decimal(0), currency, batch)
    refund.order = order
    refund.amount = amount or Decimal(0)
    refund.currency = currency
    refund.refunded_at = parse_time(data.get("refunded_at")) or event.occurred_at
    refund.source_version = event.source_version
    if batch.cache is not None:
        batch.cache.refunds[(event.workspace_id, key)] = refund
    save_row(batch, refund)
    order.refunded_total = sum((r.amount for r in _refunds_of(batch, order)), Decimal(0))
    save_order(batch, order)
    _link(event, order, batch)


def _refund_by_key(event: SourceEvent, batch: Batch, key: str) -> Refund | None:
    cache, ws = batch.cache, event.workspace_id
    if cache is not None and (ws, key) in cache.refunds:
        return cache.refunds[(ws, key)]
    refund = Refund.objects.select_for_update().filter(workspace_id=ws, refund_key=key).first()
    if cache is not None:
        cache.refunds[(ws, key)] = refund
    return refund


def _refunds_of(batch: Batch, order: Order) -> list[Refund]:
    """Every refund of the order (the batch's own instances on the fast path)."""
    cache = batch.cache
    if cache is None:
        return list(order.refunds.all()) if order.pk is not None else []
    if order.pk not in cache.refunds_of_orders:
        for refund in Refund.objects.select_for_update().filter(order_id=order.pk):
            key = (refund.workspace_id, refund.refund_key)
            if cache.refunds.get(key) is None:
                cache.refunds[key] = refund
        cache.refunds_of_orders.add(order.pk)
    return [r for r in cache.refunds.values() if r is not None and r.order_id == order.pk]


def _refund_within_total(
    event: SourceEvent, order: Order, refund: Refund, amount: Decimal, currency: str, batch: Batch
) -> None:
    """refund_mismatch: the order's refunds, this one included (a newer version of a refund
    replacing its older amount), may not exceed what was paid on it — its grand total, in
    Decimal and the same currency. Checked once the order's money is known; a failing refund
    changes nothing in the state (its writes are undone), so LTV never goes below what was kept."""
    if order.grand_total is None or not order.has_body or order.currency != currency:
        return
    others = sum(
        (r.amount for r in _refunds_of(batch, order) if r.refund_key != refund.refund_key),
        Decimal(0),
    )
    refunded = others + amount
    if refunded <= order.grand_total:
        return
    number = order.order_number or order.channel_order_ref
    unit = minor_unit(currency)

    def shown(value: Decimal) -> Decimal:  # 30.0100 as 30.01, never rounding a real digit away
        return value.quantize(unit) if value == value.quantize(unit) else value

    message = (
        f"Refunds of {shown(refunded)} {currency} exceed order {number}'s total of "
        f"{shown(order.grand_total)} {currency}."
    )
    _fail(
        event,
        batch,
        "refund_mismatch",
        message,
        subject_key=f"order:{number}",
        subject_label=number,
        order_number=number,
        detail={
            "refund_key": refund.refund_key,
            "amount": str(shown(amount)),
            "refunded": str(shown(refunded)),
            "grand_total": str(shown(order.grand_total)),
            "currency": currency,
        },
    )
    raise Outcome(State.FAILED, message, "refund_mismatch")


def stage_return(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    order = _parent_order(event, flow, batch)
    _link(event, order, batch)


# --- catalogue and stock ---------------------------------------------------------------------


def stage_product(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    if not flow.masters_products:
        raise Outcome(State.SKIPPED, "This flow does not master the catalogue.")
    data = event.data
    sku = clean_sku(data.get("sku"))
    cache, ws = batch.cache, event.workspace_id
    if cache is not None and (ws, sku) in cache.products:
        product = cache.products[(ws, sku)]
    else:
        product = Product.objects.select_for_update().filter(workspace_id=ws, sku=sku).first()
    if product is not None and event.source_version < product.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this product is staged.")
    if product is None:
        product = Product(workspace_id=ws, sku=sku)
    if cache is not None:
        cache.products[(ws, sku)] = product
    product.flow = flow
    product.sku_key = sku.casefold()
    product.product_key = str(data.get("product_key"))
    product.name = str(data.get("name") or "")[:300]
    product.status = str(data.get("status") or "active")
    product.price = money(data.get("price"))
    product.currency = str((data.get("price") or {}).get("currency") or "")
    product.source_version = event.source_version
    save_row(batch, product)


QUANTITIES = ("on_hand", "allocated", "saleable", "quarantined", "incoming")


def stage_stock(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    """Snapshots replace; deltas apply once each (a row per event), in as_of order after the
    latest snapshot; deltas older than the snapshot drop."""
    data = event.data
    as_of = parse_time(data.get("as_of")) or event.source_version
    key = (event.workspace_id, clean_sku(data.get("sku")), str(data["location"]["key"]))
    cache = batch.cache
    deltas: list[StockDelta] | None = None
    if cache is None:
        level, _ = StockLevel.objects.select_for_update().get_or_create(
            workspace_id=key[0], sku=key[1], location_key=key[2]
        )
    else:
        level, deltas = _stock_level(cache, key)
    before = level.saleable
    quantities = {k: data["quantities"].get(k) for k in QUANTITIES}
    if data["mode"] == "snapshot":
        if level.snapshot_as_of and as_of <= level.snapshot_as_of:
            raise Outcome(State.SKIPPED, "Superseded: a newer stock snapshot is staged.")
        level.snapshot = quantities
        level.snapshot_as_of = as_of
        level.derived = data.get("derived") or []
    else:
        if level.snapshot_as_of and as_of <= level.snapshot_as_of:
            raise Outcome(State.SKIPPED, "Dropped: older than the latest stock snapshot.")
        if deltas is None:
            StockDelta.objects.get_or_create(
                event=event, defaults={"level": level, "as_of": as_of, "quantities": quantities}
            )
        elif not any(d.event_id == event.pk for d in deltas):
            delta = StockDelta(level=level, event=event, as_of=as_of, quantities=quantities)
            deltas.append(delta)
            save_row(batch, delta)
    _recompute_stock(level, deltas)
    level.previous_saleable = before
    level.as_of = max(filter(None, [level.as_of, as_of]))
    save_row(batch, level)
    crossed_zero = (before or 0) <= 0 < (level.saleable or 0) or (before or 0) > 0 >= (
        level.saleable or 0
    )
    event.lane = (
        SourceEvent.Lane.REALTIME
        if crossed_zero and not event.is_backfill
        else SourceEvent.Lane.BULK
    )


def _stock_level(
    cache: StateCache, key: tuple[int, str, str]
) -> tuple[StockLevel, list[StockDelta]]:
    """The level (new if there is none) and its deltas after the snapshot, from the cache."""
    if key not in cache.levels:
        workspace_id, sku, location = key
        found = (
            StockLevel.objects.select_for_update()
            .filter(workspace_id=workspace_id, sku=sku, location_key=location)
            .first()
        )
        cache.levels[key] = found
        cache.deltas[key] = []
        if found is not None:
            deltas = StockDelta.objects.filter(level=found)
            if found.snapshot_as_of:
                deltas = deltas.filter(as_of__gt=found.snapshot_as_of)
            cache.deltas[key] = list(deltas.order_by("pk"))
    level = cache.levels[key]
    if level is None:
        level = StockLevel(workspace_id=key[0], sku=key[1], location_key=key[2])
        cache.levels[key] = level
    return level, cache.deltas[key]


def _recompute_stock(level: StockLevel, kept: list[StockDelta] | None = None) -> None:
    """The quantities: the snapshot plus the deltas after it (`kept`: the batch's list of the
    level's deltas, else read)."""
    deltas: Iterable[StockDelta]
    if kept is not None:
        deltas = [d for d in kept if not level.snapshot_as_of or d.as_of > level.snapshot_as_of]
    else:
        qs = level.deltas.all()
        if level.snapshot_as_of:
            qs = qs.filter(as_of__gt=level.snapshot_as_of)
        deltas = list(qs)
    for name in QUANTITIES:
        base = level.snapshot.get(name) if level.snapshot_as_of else None
        changes = [d.quantities.get(name) for d in deltas if d.quantities.get(name) is not None]
        unknown = base is None and not changes
        setattr(level, name, None if unknown else (base or 0) + sum(changes))


# --- aggregates ------------------------------------------------------------------------------


def recompute_aggregates(customer_ids: Iterable[int], now: datetime | None = None) -> None:
    """ORDER_COUNT, LTV (Σ grand totals − Σ refunds), LAST_ORDER_DATE, LAST_DISPATCH_DATE and
    REFUNDED, from the orders held: the same answer however often an event is retried. Cancelled
    orders, and dispatch-only orders whose money never came, count for nothing."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    now = now or timezone.now()
    sums: dict[int, dict[str, Any]] = {
        pk: {"n": 0, "ltv": Decimal(0), "last": None, "dispatch": None, "refunded": False}
        for pk in ids
    }
    # Lock the customers (in pk order) before reading their orders: two batches touching one
    # customer (an order and a refund, an ERP and a WMS event) stage in parallel, and each would
    # otherwise write aggregates summed from a snapshot missing the other's uncommitted orders —
    # the last commit wins with a stale LTV (found by bench/chaos.py). With the lock the second
    # batch waits, and its order query (a new snapshot under READ COMMITTED) sees the first's.
    customers = list(Customer.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    rows = Order.objects.filter(customer_id__in=ids).values_list(
        "customer_id",
        "has_body",
        "carries_money",
        "lifecycle",
        "grand_total",
        "refunded_total",
        "placed_at",
        "last_dispatched_at",
    )
    latest: dict[int, Any] = {}
    for customer_id, has_body, paid, lifecycle, grand, refunded, placed, dispatched in rows:
        agg = sums[customer_id]
        if dispatched and (agg["dispatch"] is None or dispatched > agg["dispatch"]):
            agg["dispatch"] = dispatched
        if not has_body or lifecycle == "cancelled":
            continue
        agg["n"] += 1
        if paid:  # a warehouse's copy of the channel's figures is no money received
            agg["ltv"] += (grand or Decimal(0)) - (refunded or Decimal(0))
        if placed and (agg["last"] is None or placed > agg["last"]):
            agg["last"] = placed
            latest[customer_id] = refunded
    for customer in customers:
        agg = sums[customer.pk]
        customer.order_count = agg["n"]
        customer.lifetime_value = agg["ltv"]
        customer.last_order_at = agg["last"]
        customer.last_dispatch_at = agg["dispatch"]
        customer.refunded = bool(latest.get(customer.pk))
        customer.aggregates_at = now
    bulk_set(
        customers,
        (
            "order_count",
            "lifetime_value",
            "last_order_at",
            "last_dispatch_at",
            "refunded",
            "aggregates_at",
        ),
    )


HANDLERS = {
    "customer.upserted": stage_customer,
    "consent.changed": stage_consent,
    "order.created": stage_order,
    "order.updated": stage_order,
    "order.status_changed": stage_status,
    "shipment.dispatched": stage_dispatch,
    "shipment.tracking_updated": stage_tracking,
    "shipment.carrier_scanned": stage_scan,
    "refund.issued": stage_refund,
    "return.received": stage_return,
    "product.updated": stage_product,
    "stock.changed": stage_stock,
}
