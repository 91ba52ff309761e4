"""A staging batch and the state it reads: what a batch learnt along the way (`Batch`, acted
on once at its end), how an event's staging ends (`Outcome`, `Failure`), and, on the fast path,
the rows the batch's events name, read up front and kept in step with every write (`StateCache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Model, Q

from monitoring.models import (
    Customer,
    CustomerKey,
    Flow,
    Order,
    OrderKey,
    Product,
    Refund,
    Shipment,
    SourceEvent,
    StockDelta,
    StockLevel,
)
from monitoring.pipeline.normalise import (
    clean_sku,
    is_credit_document,
    normalise_email,
)
from monitoring.pipeline.rows import bulk_set, create_rows

BATCH_SIZE = 200


LEASE_SECONDS = 120


STAGE = "stage"


State = SourceEvent.State


Hold = SourceEvent.Hold


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
    # When its events were claimed: an event failing again on an attempt begun before a person
    # resolved its group (a retry in flight) is not a regression.
    begun: datetime | None = None
    customers: set[int] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    passed: dict[int, list[str]] = field(default_factory=dict)  # workspace → event keys
    released_refs: dict[int, set[str]] = field(default_factory=dict)
    released_entities: dict[int, set[str]] = field(default_factory=dict)
    released_keys: dict[int, set[tuple[str, str]]] = field(default_factory=dict)  # (system, key)
    scanned_orders: set[int] = field(default_factory=set)
    catalogue: dict[int, bool] = field(default_factory=dict)
    aliases: dict[int, dict[tuple[int | None, str], str]] = field(default_factory=dict)
    products: set[int] = field(default_factory=set)  # product events staged in this batch
    warned: set[int] = field(default_factory=set)  # flows given a source warning in this batch
    cache: StateCache | None = None  # the batch's state, read up front (the fast path only)
    wrote: bool = False  # the event being staged wrote to the database (the fast path only)


class Abort(Exception):
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
            create_rows(list(rows_of.pop(model._meta.label, {}).values()))
            if model is Customer:
                self._insert_keys()
            if model is Order:
                self._insert_order_keys()
        for label in list(self.dirty):  # orders, shipments, refunds, products, stock levels
            _update_rows(list(self.dirty.pop(label).values()))

    def _insert_keys(self) -> None:
        """The source customer ids the batch met first, in one statement; a key another worker
        inserted meanwhile (for another customer) aborts the batch to the safe path."""
        if not self.new_keys:
            return
        keys, self.new_keys = self.new_keys, {}
        create_rows(
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
                    raise Abort(f"customer key {system}:{source_id} taken meanwhile")

    def _insert_order_keys(self) -> None:
        """The order keys the batch met first, in one statement; a key another worker gave
        another order meanwhile aborts the batch to the safe path."""
        if not self.new_order_keys:
            return
        keys, self.new_order_keys = self.new_order_keys, []
        create_rows(keys, ignore_conflicts=True)
        by_group: dict[tuple[int, str], list[str]] = {}
        for key in keys:
            by_group.setdefault((key.workspace_id, key.source_system), []).append(key.order_key)
        owners = {
            (ws, system, value): order_id
            for (ws, system), values in by_group.items()
            for value, order_id in OrderKey.objects.filter(
                workspace_id=ws, source_system=system, order_key__in=values
            ).values_list("order_key", "order_id")
        }
        for key in keys:
            if owners.get((key.workspace_id, key.source_system, key.order_key)) != key.order_id:
                raise Abort(f"order key {key.source_system}:{key.order_key} taken meanwhile")

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
    # (ws, source system, order key) → the order it names (None: read and absent), and the keys
    # the batch gave its orders, inserted at its end.
    order_keys: dict[tuple[int, str, str], int | None] = field(default_factory=dict)
    new_order_keys: list[OrderKey] = field(default_factory=list)

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


ORDER_BODIES = frozenset({"order.created", "order.updated"})


def _key(value: Any) -> str:
    return str(value)[:255] if value else ""


def parent_keys(event: SourceEvent) -> list[str]:
    """The keys by which an event names its order in its own source's key space: a shipment's,
    refund's, return's or status change's `data.order_key` and `links.order_key`; a credit note's
    `links.order_key` only (its `data.order_key` is its own). An order names none."""
    links = event.envelope.get("links")
    linked = _key(links.get("order_key")) if isinstance(links, dict) else ""
    if event.event_type in ORDER_BODIES:
        named = [linked] if is_credit_document(event.data) else []
    else:
        named = [_key(event.data.get("order_key")), linked]
    return [key for key in dict.fromkeys(named) if key]


def own_order_key(event: SourceEvent) -> str:
    """The key an order document gives its order in its source's key space ('' for a credit
    note, which is no order)."""
    if event.event_type not in ORDER_BODIES or is_credit_document(event.data):
        return ""
    return _key(event.data.get("order_key"))


def _read_order_keys(cache: StateCache, events: list[SourceEvent]) -> None:
    """The order keys the events name or give, and the orders they name (locked)."""
    wanted: dict[tuple[int, str], set[str]] = {}
    for event in events:
        keys = {*parent_keys(event), own_order_key(event)} - {""}
        if keys:
            wanted.setdefault((event.workspace_id, event.source_system), set()).update(keys)
    for (ws, system), keys in wanted.items():
        cache.order_keys.update({(ws, system, key): None for key in keys})
        for key, order_id in OrderKey.objects.filter(
            workspace_id=ws, source_system=system, order_key__in=sorted(keys)
        ).values_list("order_key", "order_id"):
            cache.order_keys[(ws, system, key)] = order_id
    unread = sorted({pk for pk in cache.order_keys.values() if pk is not None} - set(cache.orders))
    if unread:
        for order in Order.objects.select_for_update().filter(pk__in=unread).order_by("pk"):
            cache.keep_order(order)


RowKeys = tuple[
    dict[int, set[str]], dict[int, set[str]], dict[int, set[str]], dict[int, set[tuple[str, str]]]
]


def _keys_named(events: list[SourceEvent]) -> RowKeys:
    """Per workspace, the shipment keys, refund keys, SKUs and (SKU, location) pairs the events
    name."""
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
    return shipment_keys, refund_keys, skus, levels


def _read_shipments(cache: StateCache, shipment_keys: dict[int, set[str]]) -> None:
    for ws, keys in shipment_keys.items():
        cache.shipments.update({(ws, key): None for key in keys})
        for shipment in Shipment.objects.select_for_update().filter(
            workspace_id=ws, shipment_key__in=sorted(keys)
        ):
            cache.shipments[(ws, shipment.shipment_key)] = shipment


def _read_refunds(cache: StateCache, refund_keys: dict[int, set[str]]) -> None:
    """The refunds named, and every refund of the orders read, for their sums."""
    if not refund_keys:
        return
    order_pks = sorted(pk for pk in cache.orders if not cache.is_pending(cache.orders[pk]))
    refund_q = Q(order_id__in=order_pks)
    for ws, keys in refund_keys.items():
        cache.refunds.update({(ws, key): None for key in keys})
        refund_q |= Q(workspace_id=ws, refund_key__in=sorted(keys))
    for refund in Refund.objects.select_for_update().filter(refund_q).order_by("pk"):
        cache.refunds[(refund.workspace_id, refund.refund_key)] = refund
    cache.refunds_of_orders |= set(cache.orders)


def _read_products(cache: StateCache, skus: dict[int, set[str]]) -> None:
    for ws, wanted in skus.items():
        cache.products.update({(ws, sku): None for sku in wanted})
        for product in Product.objects.select_for_update().filter(
            workspace_id=ws, sku__in=sorted(wanted)
        ):
            cache.products[(ws, product.sku)] = product


def _read_levels(cache: StateCache, ws: int, pairs: set[tuple[str, str]]) -> None:
    """A workspace's stock levels the events name, and the deltas after each level's snapshot."""
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


def _read_rows(cache: StateCache, events: list[SourceEvent]) -> None:
    """The shipments, refunds, products and stock levels the batch's events name, locked, in a
    query each (and the refunds of the orders read, and the deltas after each level's
    snapshot)."""
    shipment_keys, refund_keys, skus, levels = _keys_named(events)
    _read_shipments(cache, shipment_keys)
    _read_refunds(cache, refund_keys)
    _read_products(cache, skus)
    for ws, pairs in levels.items():
        _read_levels(cache, ws, pairs)


def read_state(events: list[SourceEvent]) -> StateCache:
    """Everything the batch's customer and order events will look up, a query or two each:
    customers by email and by source id, the orders by each flow's join key and by the order
    keys the events name (locked, as the lookups lock them one by one)."""
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
    _read_order_keys(cache, events)
    _read_rows(cache, events)
    return cache


def fail(event: SourceEvent, batch: Batch, kind: str, message: str, **fields: Any) -> None:
    """Remember a validation failure (recorded at the end of the batch)."""
    batch.failures.append(Failure(event, kind, message, **fields))


def failed_outcome(batch: Batch, event: SourceEvent) -> Outcome | None:
    mine = [f for f in batch.failures if f.event is event]
    if not mine:
        return None
    return Outcome(State.FAILED, "; ".join(f.message for f in mine)[:2000], mine[0].kind)


def save_row(batch: Batch, obj: Any) -> None:
    """obj.save(), or on the fast path: written with the batch's other rows at its end."""
    if batch.cache is None:
        obj.save()
        return
    batch.wrote = True  # only a rollback of the batch undoes it
    batch.cache.write(obj)
