"""Reconciliation against the source, read through its connector's poll: the source's orders of
the last `reconcile_source_days` (up to a settling margin) are read through the adapter's
`backfill` and compared with the engine's state. A difference is an order the source has that
Syncdesk never received, or a grand total that differs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from django.db.models import Q

from connectors.sources.base import SourceAdapter, SourceError
from connectors.sources.registry import get_adapter
from monitoring.models import Flow, FlowWatch, Order, ReconciliationRun, SourceEvent
from monitoring.pipeline.mapping import number
from monitoring.watch.differences import Diff, Found, same

SOURCE_PAGES = 200  # a run reads at most this many backfill pages of the source
#: a source order younger than this may still be on its way (a webhook in flight, a fetch due)
SETTLE = timedelta(minutes=15)
IN_FLIGHT = (SourceEvent.State.RECEIVED, SourceEvent.State.READY, SourceEvent.State.HELD)


@dataclass
class SourceOrder:
    """One order as the source holds it, from its newest order event in the window."""

    key: str
    entity_key: str
    number: str
    ref: str
    email: str
    grand_total: Any
    version: str
    events: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return self.number or self.ref or self.key


def _amount(value: Any) -> Any:
    """A money amount as the engine shows one (10.0000 → 10), or as given when not a number."""
    try:
        return number(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return value


def source_window(flow: Flow, now: datetime) -> tuple[datetime, datetime]:
    days = FlowWatch.for_flow(flow).reconcile_source_days or 7
    now = now.replace(microsecond=0)
    return now - timedelta(days=days), now - SETTLE


def read_source_orders(
    adapter: SourceAdapter, flow: Flow, start: datetime, end: datetime
) -> dict[str, SourceOrder]:
    """The source's orders created between `start` and `end`, paged through the adapter's
    backfill (its poll by date), by order key; each with every event read for it."""
    events: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(SOURCE_PAGES):
        page = adapter.backfill(flow.source, start, end, cursor)
        events += [e for e in page.events if isinstance(e, dict)]
        if page.reached_present or not page.events or page.cursor == cursor:
            break
        cursor = page.cursor
    orders: dict[str, SourceOrder] = {}
    for event in events:
        data = event.get("data") or {}
        if not str(event.get("event_type", "")).startswith("order.") or not isinstance(data, dict):
            continue
        entity = event.get("entity") or {}
        key = str(data.get("order_key") or entity.get("key") or "")
        if not key:
            continue
        version = str(event.get("source_updated_at") or event.get("occurred_at") or "")
        order = orders.get(key)
        if order is None:
            order = orders[key] = SourceOrder(
                key, str(entity.get("key") or key), "", "", "", None, "", []
            )
        totals = data.get("totals") if isinstance(data.get("totals"), dict) else {}
        grand = (totals or {}).get("grand_total")
        if isinstance(grand, dict) and version >= order.version:
            order.grand_total = _amount(grand.get("amount"))
            order.version = version
        order.number = order.number or str(data.get("order_number") or "")
        order.ref = order.ref or str(data.get("channel_order_ref") or "")
        identity = event.get("identity") or {}
        order.email = order.email or str(identity.get("email") or "")
    # Every event read that belongs to one of these orders (a shipment or refund links to it),
    # so a repair takes in the whole of what the engine missed.
    for event in events:
        entity = event.get("entity") or {}
        links = event.get("links") or {}
        data = event.get("data") or {}
        for key in {
            str(entity.get("key") or ""),
            str(links.get("order_key") or "") if isinstance(links, dict) else "",
            str(data.get("order_key") or "") if isinstance(data, dict) else "",
        }:
            if key in orders:
                orders[key].events.append(event)
                break
    return orders


def compare_source(flow: Flow, run: ReconciliationRun, size: int) -> list[Found]:
    """The source's orders of the window against the engine's state. A source that cannot be
    polled is not read (`source_orders` stays empty); one that fails is noted on the run, and
    the comparison with DotDigital still stands."""
    adapter = get_adapter(flow.source.kind)
    if adapter is None or not adapter.can_poll:
        return []
    start, end = source_window(flow, run.started_at)
    run.source_window_start, run.source_window_end = start, end
    try:
        orders = read_source_orders(adapter, flow, start, end)
    except (SourceError, requests.RequestException) as exc:
        run.source_error = f"{flow.source.name}: {exc}"[:2000]
        return []
    run.source_orders = len(orders)
    chosen = list(orders.values())
    if size and len(chosen) > size:
        chosen = random.sample(chosen, size)
    keys = {o.entity_key for o in chosen} | {o.key for o in chosen}
    states: dict[str, set[str]] = {}
    for entity_key, state in SourceEvent.objects.filter(
        workspace_id=flow.workspace_id, entity_key__in=keys
    ).values_list("entity_key", "state"):
        states.setdefault(entity_key, set()).add(state)
    numbers = {o.number for o in chosen if o.number} | {o.ref for o in chosen if o.ref}
    engine_orders = list(
        Order.objects.filter(workspace_id=flow.workspace_id).filter(
            Q(order_number__in=numbers) | Q(channel_order_ref__in=numbers)
        )
    )
    by_key = {k: o for o in engine_orders for k in (o.source_keys or ())}
    by_number = {o.order_number: o for o in engine_orders if o.order_number}
    by_ref = {o.channel_order_ref: o for o in engine_orders if o.channel_order_ref}
    found: list[Found] = []
    checked = matched = 0
    for order in sorted(chosen, key=lambda o: o.label):
        seen = states.get(order.entity_key, set()) | states.get(order.key, set())
        if seen & set(IN_FLIGHT):
            continue  # received and on its way: lag alerts watch that, not reconciliation
        checked += 1
        mine = by_key.get(order.key) or by_number.get(order.number) or by_ref.get(order.ref)
        if mine is None and not seen:
            found.append(
                Found(
                    Diff.SOURCE_MISSING,
                    order.label,
                    "ops",
                    order.email,
                    order.label,
                    source=order.grand_total,
                    events=order.events,
                )
            )
            continue
        if (
            mine is not None
            and order.grand_total is not None
            and mine.grand_total is not None
            and not same(number(mine.grand_total), order.grand_total, "numeric")
        ):
            found.append(
                Found(
                    Diff.SOURCE_TOTAL,
                    order.label,
                    "finance",
                    order.email or mine.email,
                    order.label,
                    "grand_total",
                    number(mine.grand_total),
                    source=order.grand_total,
                    events=order.events,
                )
            )
            continue
        matched += 1
    run.checked += checked
    run.matched += matched
    return found
