"""Refunds posted to the webhook: what was paid on an order bounds what can be refunded."""

from __future__ import annotations

from decimal import Decimal

from exceptions_inbox.kinds import get_kind
from exceptions_inbox.models import Occurrence
from monitoring.models import Customer, Order, Refund, SourceEvent
from tests.monitoring.engine import stage

State = SourceEvent.State


def event_of(source_event: dict) -> SourceEvent:
    return SourceEvent.objects.get(source_event_id=source_event["source_event_id"])


def test_a_refund_beyond_the_orders_total_opens_refund_mismatch_for_finance(erp):
    erp.post(erp.order("SO-1", total="30.00"))
    first = erp.refund("SO-1", "R-1", "20.00")
    second = erp.refund("SO-1", "R-2", "10.01", at="2026-05-04T09:00:00Z")
    erp.post([first, second])
    stage()
    assert event_of(first).state == State.READY
    failed = event_of(second)
    assert failed.state == State.FAILED and failed.failed_kind == "refund_mismatch"
    assert "30.01 GBP" in failed.reason and "30.00 GBP" in failed.reason
    occurrence = Occurrence.objects.get(group__kind="refund_mismatch")
    assert occurrence.event_key == failed.key and occurrence.order_number == "SO-1"
    assert occurrence.group.team_slug == "finance"
    # The refund that does not fit changes nothing: LTV keeps what the accepted refund left.
    assert list(Refund.objects.values_list("refund_key", flat=True)) == ["R-1"]
    assert Order.objects.get().refunded_total == Decimal("20.00")
    assert Customer.objects.get().lifetime_value == Decimal("10.00")


def test_refunds_adding_up_to_exactly_the_total_pass(erp):
    erp.post(erp.order("SO-1", total="19.99"))
    erp.post([erp.refund("SO-1", "R-1", "9.99"), erp.refund("SO-1", "R-2", "10.00")])
    stage()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {State.READY}
    assert not Occurrence.objects.exists()
    assert Customer.objects.get().lifetime_value == Decimal("0.00")


def test_a_corrected_refund_is_checked_with_its_new_amount_not_added_to_its_old_one(erp):
    erp.post(erp.order("SO-1", total="30.00"))
    erp.post(erp.refund("SO-1", "R-1", "20.00"))
    stage()
    corrected = erp.refund("SO-1", "R-1", "25.00", at="2026-05-04T09:00:00Z")
    erp.post(corrected)
    stage()
    assert event_of(corrected).state == State.READY
    assert Customer.objects.get().lifetime_value == Decimal("5.00")


def test_a_refund_mismatch_retried_after_the_order_is_corrected_goes_through(erp):
    erp.post(erp.order("SO-1", total="30.00"))
    refund = erp.refund("SO-1", "R-1", "35.00")
    erp.post(refund)
    stage()
    assert event_of(refund).failed_kind == "refund_mismatch"
    erp.post(
        erp.order("SO-1", total="40.00", version="2026-05-01T12:00:00Z", event_type="order.updated")
    )
    stage()
    occurrence = Occurrence.objects.get(group__kind="refund_mismatch")
    get_kind("refund_mismatch").retry([occurrence])
    stage()
    assert event_of(refund).state == State.READY
    assert Customer.objects.get().lifetime_value == Decimal("5.00")
    occurrence.refresh_from_db()
    assert occurrence.state != Occurrence.State.OPEN


def test_a_refund_for_a_dispatch_only_order_waits_for_no_total(erp, wms):
    """Without the order's money there is nothing to compare with: the refund is kept."""
    erp.flow.hold_orphans = False
    erp.flow.save()
    refund = erp.refund("SO-9", "R-1", "12.00")
    erp.post(refund)
    stage()
    assert event_of(refund).state == State.READY
    assert Order.objects.get().has_body is False
