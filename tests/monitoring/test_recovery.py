"""After a fault, delivery resumes within seconds: a write that gets through makes the lane's
backed-off writes due, a transient backoff never grows past a minute, and the first retry of one
failed call comes within a second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from monitoring.models import DeliveryBatch, Operation, SourceEvent
from monitoring.pipeline import deliver, lanes
from monitoring.pipeline.confirm import MAX_BACKOFF, backoff
from monitoring.pipeline.lanes import stage_flow
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_delivery import order_created

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_write_that_gets_through_makes_the_lanes_backed_off_writes_due(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(deliver, "_resumed", {})
    now = datetime.now(UTC)
    engine.post("erp", [order_created("RC1", "early@example.com", "5.00", at=now)])
    # Planned, then parked by a fault's backoff, as after a dropped connection or a 503 storm.
    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    stage_flow(engine.erp_flow.pk, "realtime")
    parked = Operation.objects.filter(lane="realtime", state="pending")
    assert parked.exists()
    parked.update(attempts=6, next_attempt_at=timezone.now() + timedelta(minutes=10))

    engine.post("erp", [order_created("RC2", "later@example.com", "7.00", at=now, customer="C2")])
    stage_flow(engine.erp_flow.pk, "realtime")
    assert deliver.send_due(engine.destination, "realtime") > 0  # the later order goes through

    still_parked = Operation.objects.filter(
        lane="realtime", state="pending", next_attempt_at__gt=timezone.now() + timedelta(seconds=5)
    )
    assert not still_parked.exists(), "the parked writes are due again"
    engine.pump()
    assert set(
        SourceEvent.objects.filter(event_type="order.created").values_list("state", flat=True)
    ) == {"delivered"}


def test_a_transient_backoff_is_at_most_a_minute_and_the_first_retry_within_a_second():
    assert all(0.2 <= backoff(1) <= 1.0 for _ in range(200))
    assert all(
        backoff(attempts) <= MAX_BACKOFF == 60.0 for attempts in range(30) for _ in range(20)
    )
    assert max(backoff(12) for _ in range(500)) > 30, "it still grows under a long fault"


def test_an_import_is_not_polled_before_its_sender_has_recorded_its_operations(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """Another runner (or the staging task's inline send) polls between the import's PUT and the
    sender recording its operations as sent: it must leave the batch alone, or it would finish
    it with none of them sent and strand them."""
    from monitoring.pipeline import confirm
    from monitoring.pipeline.destination import client_for
    from tests.monitoring.test_realtime_lane import customer_update

    now = datetime.now(UTC)
    engine.post("erp", [customer_update(i, at=now) for i in range(30)])
    lanes.stage_flow(engine.erp_flow.pk, "bulk")
    record = deliver.record_results
    polled: list[int] = []

    def another_runner_polls_first(results, **kwargs):  # type: ignore[no-untyped-def]
        engine.sandbox.api.post(f"{engine.sandbox.url}/_sandbox/settle")
        DeliveryBatch.objects.update(next_attempt_at=timezone.now())  # its first poll is due
        client = client_for(engine.destination, "bulk")
        polled.append(confirm.run_confirmation(client, engine.destination.pk, "bulk"))
        return record(results, **kwargs)

    monkeypatch.setattr(deliver, "record_results", another_runner_polls_first)
    assert deliver.send_due(engine.destination, "bulk") > 0
    assert polled == [0], "the new import was left to its sender"
    monkeypatch.setattr(deliver, "record_results", record)
    engine.pump()
    assert not Operation.objects.exclude(state="delivered").exists()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_killed_realtime_senders_writes_are_claimed_again_within_half_a_minute(engine: Engine):
    """A claim's lease is the time a killed sender's writes wait: seconds for the realtime lane
    (its claims take seconds), longer than an import's PUT for the bulk lane."""
    from tests.monitoring.test_realtime_lane import customer_update

    now = datetime.now(UTC)
    engine.post("erp", [order_created("LS1", "lease@example.com", "5.00", at=now)])
    engine.post("erp", [customer_update(i, at=now) for i in range(3)])
    stage_flow(engine.erp_flow.pk, "realtime")
    stage_flow(engine.erp_flow.pk, "bulk")
    Operation.objects.filter(state="delivered").update(state="pending", next_attempt_at=now)
    for lane, longest in (("realtime", 30), ("bulk", 180)):
        claimed = deliver.claim_operations(engine.destination.pk, lane, "killed-sender", 100)
        assert claimed, lane
        leases = Operation.objects.filter(pk__in=claimed).values_list("lease_until", flat=True)
        assert max(leases) <= timezone.now() + timedelta(seconds=longest), lane


def test_an_event_whose_last_writes_finish_in_two_claims_at_once_is_still_settled(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """Two claims record an event's last outcomes at once: each looks, inside its transaction,
    while the other's outcome is not yet committed, and sees the event still waiting. The look
    after commit settles it (the full chaos run once left an event `ready` with every write
    delivered)."""
    from monitoring.models import Customer, OperationEvent
    from monitoring.pipeline import confirm
    from monitoring.pipeline.sending import Result

    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    now = datetime.now(UTC)
    engine.post("erp", [order_created("RACE1", "race@example.com", "5.00", at=now)])
    stage_flow(engine.erp_flow.pk, "realtime")
    event = SourceEvent.objects.get(event_type="order.created")
    ops = list(OperationEvent.objects.filter(event=event).values_list("operation_id", flat=True))
    assert len(ops) > 1
    # The contact written already: the order's record and list write are due with it.
    Customer.objects.update(dotdigital_contact_id="101")
    claimed = deliver.claim_operations(engine.destination.pk, "realtime", "tester", 100)
    assert set(ops) <= set(claimed)
    real = confirm.settle_events
    looks: list[set[int]] = []

    def the_other_claim_not_yet_committed(ids, now=None, *, failures=()):  # type: ignore[no-untyped-def]
        looks.append(set(ids))
        return set() if len(looks) == 1 else real(ids, now, failures=failures)

    monkeypatch.setattr(confirm, "settle_events", the_other_claim_not_yet_committed)
    confirm.record_results([Result(pk, "delivered") for pk in claimed], owner="tester")
    event.refresh_from_db()
    assert event.state == SourceEvent.State.DELIVERED
    assert looks == [{event.pk}, {event.pk}]


def test_writes_a_claim_leaves_unsent_go_back_pending_uncounted_and_the_held_due_again_shortly(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """What a claim could not send goes back as it was, in one write per row: no attempt
    counted, due when it was due, except writes held for the lane's next import (due again in
    `HOLD_SECONDS`)."""
    from typing import Any, cast

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from monitoring.models import Customer
    from monitoring.pipeline.sending import HOLD_SECONDS, Sending

    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    now = datetime.now(UTC)
    engine.post("erp", [order_created("PB1", "back@example.com", "5.00", at=now)])
    stage_flow(engine.erp_flow.pk, "realtime")
    Customer.objects.update(dotdigital_contact_id="101")
    claimed = deliver.claim_operations(engine.destination.pk, "realtime", "tester", 100)
    assert len(claimed) >= 2
    ops = list(Operation.objects.filter(pk__in=claimed).order_by("pk"))
    held, other = ops[0], ops[1]
    sending = Sending(
        client=cast(Any, None),
        destination=engine.destination,
        lane="realtime",
        owner="tester",
        singles_only={held.pk},
    )
    with CaptureQueriesContext(connection) as queries:
        deliver.put_back_unsent(sending, ops)
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["UPDATE"]
    after = {op.pk: op for op in Operation.objects.filter(pk__in=claimed)}
    for op in ops:
        back = after[op.pk]
        assert (back.state, back.lease_owner, back.lease_until) == ("pending", "", None)
        assert back.attempts == op.attempts - 1
    assert after[other.pk].next_attempt_at == other.next_attempt_at
    assert held.next_attempt_at < after[held.pk].next_attempt_at
    assert after[held.pk].next_attempt_at <= timezone.now() + timedelta(seconds=HOLD_SECONDS)
