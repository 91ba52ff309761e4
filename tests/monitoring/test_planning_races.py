"""Two planners of one contact at once (design.md, "Nothing lost, nothing doubled"): a dispatch
planned in one lane while its order's refund is staged and planned in the other. The second
planner must read the state as the first left it, or the refund's removal from "Dispatched
today" is dropped as a no-op and the dispatch's add lands after it (found by the CI chaos run:
contacts left on "Dispatched today" after a refund).

PostgreSQL only: the planners serialise on advisory locks; SQLite takes its one write lock at
BEGIN IMMEDIATE."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, connections

from monitoring.models import Operation
from monitoring.pipeline import plan
from monitoring.pipeline.claims import claim_ids, worker_token
from monitoring.pipeline.mapping import DISPATCHED_TODAY, RECENT_BUYERS
from monitoring.pipeline.staging.run import run_staging
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_delivery import dispatched, list_names, order_created, refunded

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="planners serialise on PostgreSQL locks"
    ),
]

EMAIL = "race@example.com"


def claim(event_type: str) -> tuple[list[int], str]:
    owner = worker_token()
    ids = claim_ids(
        plan.ready_events().filter(event_type=event_type),
        limit=10,
        owner=owner,
        lease_seconds=60,
    )
    assert ids, f"no {event_type} event ready"
    return ids, owner


def test_a_refund_planned_while_its_dispatch_is_being_planned_still_takes_the_contact_off_the_list(
    engine: Engine, monkeypatch: Any
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("RC1", EMAIL, "60.00", at=now)])
    engine.pump()
    engine.post("wms", [dispatched("RC1", at=now + timedelta(seconds=5))])
    run_staging()
    dispatch_ids, dispatch_owner = claim("shipment.dispatched")

    loaded = threading.Event()
    second_done = threading.Event()
    real_load = plan.load_context

    def load_then_linger(events: list, moment: datetime) -> Any:
        ctx = real_load(events, moment)
        if any(e.event_type == "shipment.dispatched" for e in events):
            loaded.set()
            # Without the lock the refund's planner finishes meanwhile; with it, it cannot
            # until this transaction ends, so this wait runs out (bounded, not a timing claim).
            second_done.wait(timeout=3)
        return ctx

    monkeypatch.setattr(plan, "load_context", load_then_linger)
    failures: list[BaseException] = []

    def plan_dispatch() -> None:
        try:
            plan.plan_batch(dispatch_ids, dispatch_owner)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=plan_dispatch)
    first.start()
    assert loaded.wait(timeout=30)
    engine.post("erp", [refunded("RC1", "60.00", at=now + timedelta(seconds=10))])
    run_staging()
    refund_ids, refund_owner = claim("refund.issued")
    plan.plan_batch(refund_ids, refund_owner)
    second_done.set()
    first.join(timeout=60)
    assert not first.is_alive() and not failures, failures

    key = f"list:{DISPATCHED_TODAY}:{EMAIL}"
    open_op = Operation.objects.filter(key=key, state__in=("pending", "sending", "sent")).first()
    assert open_op is None or open_op.kind == "list_remove"
    engine.pump()
    assert list_names(engine, EMAIL) == {RECENT_BUYERS}
