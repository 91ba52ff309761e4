"""Which lane an event travels in, from the webhook on.

An event's lane is set when it is stored, so that staging and planning, not only sending, serve the
realtime lane first: a dispatch posted behind a stock refresh of 60,000 rows is staged, planned
and sent before any of them (`lanes.stage_flow`). Staging may move an event to the realtime lane
once it knows what the webhook could not (a stock level crossing zero, `staging.catalogue`); it
never moves a backfill there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monitoring.models import SourceEvent, StockLevel
from monitoring.pipeline.normalise import stock_level_key

REALTIME = "realtime"
BULK = "bulk"
LANES = (REALTIME, BULK)

# What a customer sees within minutes: a new order's confirmation, a dispatch, a carrier's scan, a
# refund, and consent (never mail someone who has just opted out).
REALTIME_TYPES = frozenset(
    {
        "consent.changed",
        "order.created",
        "shipment.dispatched",
        "shipment.carrier_scanned",
        "refund.issued",
    }
)


def intake_lane(event_type: str, data: Any, *, backfill: bool) -> str:
    """The lane of an event as it arrives. A stock snapshot that says nothing is saleable goes on
    the realtime lane too ("in stock" mails must stop at once), unless its level is known to be
    out of stock already (`quiet_zero_snapshots`); whether a level comes back from zero needs the
    level before it, which staging reads."""
    if backfill:
        return BULK
    if event_type in REALTIME_TYPES:
        return REALTIME
    if event_type == "stock.changed" and isinstance(data, dict) and data.get("mode") == "snapshot":
        quantities = data.get("quantities")
        if isinstance(quantities, dict) and quantities.get("saleable") == 0:
            return REALTIME
    return BULK


STOCK_CHANGED = "stock.changed"


def quiet_zero_snapshots(workspace_id: int, rows: Iterable[SourceEvent]) -> None:
    """Move to the bulk lane each realtime zero snapshot that cannot take its level out of stock:
    the level is stored out of stock (or never known, which staging counts as out of stock,
    `catalogue.crossed_zero`) and no earlier stock event of it waits to be staged, in this
    request or before it. A stock refresh names every SKU, most of the zeros on levels that were
    at zero already; on the realtime lane they would be staged ahead of the dispatches behind
    them, thousands to the stream's few (the staging then moved each to the bulk lane anyway).

    `rows` in the order they came. Waiting events are read before the levels, so a stager
    committing a restock between the two reads is seen in one or the other. A zero that should
    have stayed realtime (its waiting restock named under another entity key, or behind more
    than `RECENT_EVENTS` of it) loses nothing: staging sees the crossing and plans it on the
    realtime lane."""
    rows = list(rows)
    seen: set[tuple[str, str]] = set()  # levels an earlier event of this request moves
    zeros: list[tuple[SourceEvent, tuple[str, str]]] = []
    for row in rows:
        if row.event_type != STOCK_CHANGED:
            continue
        key = stock_level_key(row.envelope["data"])  # validated: sku and location.key
        if row.lane == REALTIME and key not in seen:
            zeros.append((row, key))
        seen.add(key)
    if not zeros:
        return
    waiting = {
        row.entity_key for row, _ in zeros if _has_waiting_event(workspace_id, row.entity_key)
    }
    skus = {sku for _, (sku, _) in zeros}
    in_stock = {
        (sku, location)
        for sku, location, saleable, previous in StockLevel.objects.filter(
            workspace_id=workspace_id, sku__in=skus
        ).values_list("sku", "location_key", "saleable", "previous_saleable")
        if (saleable if saleable is not None else previous or 0) > 0
    }
    for row, key in zeros:
        if row.entity_key not in waiting and key not in in_stock:
            row.lane = BULK


RECENT_EVENTS = 10


def _has_waiting_event(workspace_id: int, entity_key: str) -> bool:
    """Whether one of the entity's latest events waits to be staged. The states are read, not
    filtered on: how many events wait swings from none to tens of thousands within seconds,
    faster than PostgreSQL's statistics follow, and with `state` in the query the planner took
    the `event_state` index and read every waiting event for each key. Newest first on
    `event_entity`, the plan does not depend on them."""
    states = (
        SourceEvent.objects.filter(workspace_id=workspace_id, entity_key=entity_key)
        .order_by("-source_version")
        .values_list("state", flat=True)[:RECENT_EVENTS]
    )
    return SourceEvent.State.RECEIVED in set(states)
