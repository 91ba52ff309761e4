"""Which lane an event travels in, from the webhook on.

An event's lane is set when it is stored, so that staging and planning, not only sending, serve the
realtime lane first: a dispatch posted behind a stock refresh of 60,000 rows is staged, planned
and sent before any of them (`lanes.stage_flow`). Staging may move an event to the realtime lane
once it knows what the webhook could not (a stock level crossing zero, `staging.catalogue`); it
never moves a backfill there.
"""

from __future__ import annotations

from typing import Any

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
    the realtime lane too ("in stock" mails must stop at once); whether a level comes back from
    zero needs the level before it, which staging reads."""
    if backfill:
        return BULK
    if event_type in REALTIME_TYPES:
        return REALTIME
    if event_type == "stock.changed" and isinstance(data, dict) and data.get("mode") == "snapshot":
        quantities = data.get("quantities")
        if isinstance(quantities, dict) and quantities.get("saleable") == 0:
            return REALTIME
    return BULK
