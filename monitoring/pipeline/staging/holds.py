"""Holds: an event that needs another first (a dispatch before its order, a return before its
refund) waits HELD, looking again now and then, until what it waits for arrives or its deadline
passes (then it fails as an orphan, into the inbox).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from monitoring.models import (
    Flow,
    SourceEvent,
)
from monitoring.pipeline.staging.batch import Batch, Hold, Outcome, State, fail, parent_keys

# A hold is released by the batch that stages what it waits for (`run._release`), but that batch only
# sees holds committed before its own update: a hold written by a concurrent transaction (the ERP
# and the WMS flows stage in parallel) misses its release and would sleep until its deadline
# (6 h by default). So a young hold looks again every HOLD_RECHECK until HOLD_RACE_WINDOW has
# passed since the event arrived, then waits for its deadline (or a release).
HOLD_RECHECK = timedelta(seconds=20)


HOLD_RACE_WINDOW = timedelta(minutes=10)


def next_look(event: SourceEvent, batch: Batch) -> datetime:
    deadline = event.hold_deadline or batch.now
    if batch.now - event.received_at < HOLD_RACE_WINDOW:
        return min(deadline, batch.now + HOLD_RECHECK)
    return deadline


def hold_orphan(event: SourceEvent, flow: Flow, batch: Batch, waits_for: str) -> None:
    """No order yet: wait (with a deadline), or open orphan_expired once it has passed."""
    if event.hold_deadline is None or event.hold != Hold.ORPHAN:
        event.hold_deadline = event.received_at + timedelta(seconds=flow.orphan_hold_seconds)
    if batch.now >= event.hold_deadline:
        named = event.order_ref or next(iter(parent_keys(event)), "")
        fail(
            event,
            batch,
            "orphan_expired",
            f"{waits_for[:1].upper()}{waits_for[1:]} never arrived before the hold's deadline.",
            # One group per flow: the orders it waited for are on the occurrences.
            subject_key="orphan",
            subject_label="Waited for orders that never arrived",
            order_number=(event.order_ref or named)[:100],
            detail={"waited_for": waits_for, "deadline": event.hold_deadline.isoformat()},
        )
        event.hold = Hold.ORPHAN
        raise Outcome(State.FAILED, f"Expired waiting for {waits_for}.", "orphan_expired")
    event.hold = Hold.ORPHAN
    event.next_attempt_at = next_look(event, batch)
    raise Outcome(
        State.HELD, f"Waiting for {waits_for} (until {event.hold_deadline:%Y-%m-%d %H:%M} UTC)."
    )
