"""Staging: events posted to the webhook become one merged state per workspace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import time_machine

from exceptions_inbox.models import Occurrence
from monitoring.models import Customer, Order, Product, SkuAlias, SourceEvent, StockLevel
from monitoring.pipeline.flows import mark_catalogue_loaded
from tests.monitoring.engine import stage

State = SourceEvent.State


def states():
    return {e.source_event_id: e.state for e in SourceEvent.objects.all()}


def test_a_wms_dispatch_and_an_erp_sale_for_one_order_number_are_one_order(erp, wms):
    erp.post(erp.order("SO-1001", total="42.50"))
    wms.post(wms.dispatch("SO-1001", at="2026-05-02T09:00:00Z"))
    stage()
    order = Order.objects.get()
    assert order.order_number == "SO-1001"
    assert order.grand_total == Decimal("42.50")  # the ERP brings the money
    assert order.last_dispatched_at == datetime(2026, 5, 2, 9, tzinfo=UTC)  # the WMS the dispatch
    assert set(states().values()) == {State.READY}
    dispatch = SourceEvent.objects.get(event_type="shipment.dispatched")
    assert dispatch.order == order and dispatch.customer == order.customer
    assert order.customer.last_dispatch_at == order.last_dispatched_at


def test_flows_join_on_the_channel_order_reference_when_configured(world):
    from tests.monitoring.engine import Source

    erp = Source(world.workspace, "erp")
    wms = Source(world.workspace, "wms", join_key="channel_order_ref")
    erp.post(erp.order("SO-7", links={"channel_order_ref": "AMZ-202-1"}))
    dispatch = wms.dispatch("WMS-99")
    dispatch["links"] = {"channel_order_ref": "AMZ-202-1"}
    wms.post(dispatch)
    stage()
    assert Order.objects.count() == 1
    assert SourceEvent.objects.get(event_type="shipment.dispatched").order.order_number == "SO-7"


def test_the_same_event_three_times_is_stored_and_staged_once(erp):
    event = erp.order("SO-1", total="10.00")
    answers = [erp.post(event).json()["results"][0]["status"] for _ in range(3)]
    assert answers == ["accepted", "duplicate", "duplicate"]
    stage()
    assert SourceEvent.objects.count() == 1
    assert Customer.objects.get().order_count == 1


def test_the_same_event_twice_in_one_body_is_stored_once(erp):
    event = erp.order("SO-1")
    answer = erp.post([event, event]).json()
    assert [r["status"] for r in answer["results"]] == ["accepted", "duplicate"]
    assert SourceEvent.objects.count() == 1


def test_an_older_version_never_overwrites_a_newer_one(erp):
    newer = erp.order(
        "SO-1", total="20.00", version="2026-05-01T12:00:00Z", event_type="order.updated"
    )
    older = erp.order(
        "SO-1", total="10.00", version="2026-05-01T10:00:00Z", event_type="order.updated"
    )
    erp.post(newer)
    stage()
    erp.post(older)
    stage()
    assert Order.objects.get().grand_total == Decimal("20.00")
    skipped = SourceEvent.objects.get(source_event_id=older["source_event_id"])
    assert skipped.state == State.SKIPPED and "Superseded" in skipped.reason
    # And in one batch, whatever order they arrive in.
    erp.post(
        [
            erp.order("SO-2", total="5.00", version="2026-05-01T12:00:00Z"),
            erp.order("SO-2", total="4.00", version="2026-05-01T11:00:00Z"),
        ]
    )
    stage()
    assert Order.objects.get(order_number="SO-2").grand_total == Decimal("5.00")


def test_an_orphan_waits_for_its_order_and_is_released_when_it_arrives(erp, wms):
    wms.post(wms.dispatch("SO-9"))
    stage()
    held = SourceEvent.objects.get()
    assert held.state == State.HELD and held.hold == SourceEvent.Hold.ORPHAN
    assert held.hold_deadline == held.received_at + timedelta(seconds=wms.flow.orphan_hold_seconds)
    assert "order SO-9" in held.reason
    erp.post(erp.order("SO-9"))
    stage()
    held.refresh_from_db()
    assert held.state == State.READY and held.order.order_number == "SO-9"
    assert Order.objects.count() == 1


def test_an_orphan_whose_deadline_passes_opens_orphan_expired(erp, wms):
    with time_machine.travel(datetime(2026, 5, 2, 9, tzinfo=UTC), tick=False) as traveller:
        wms.post(wms.dispatch("SO-404"))
        stage()
        assert SourceEvent.objects.get().state == State.HELD
        traveller.shift(timedelta(seconds=wms.flow.orphan_hold_seconds - 60))
        stage()
        assert SourceEvent.objects.get().state == State.HELD
        traveller.shift(timedelta(seconds=120))
        stage()
    event = SourceEvent.objects.get()
    assert event.state == State.FAILED and event.failed_kind == "orphan_expired"
    occurrence = Occurrence.objects.get(group__kind="orphan_expired")
    assert occurrence.event_key == event.key and occurrence.state == Occurrence.State.OPEN


def test_aggregates_are_exact_to_the_penny_after_retries_and_refunds(erp):
    orders = [
        erp.order(f"SO-{n}", total=total, version=f"2026-05-0{n}T10:00:00Z")
        for n, total in ((1, "19.99"), (2, "0.10"), (3, "100.01"))
    ]
    refunds = [erp.refund("SO-1", "R-1", "4.99"), erp.refund("SO-3", "R-2", "0.01")]
    for _ in range(3):  # the source retries everything
        erp.post(orders + refunds)
        stage()
    # A worker's retry of staging itself changes nothing either.
    SourceEvent.objects.update(state=State.RECEIVED)
    stage()
    customer = Customer.objects.get()
    assert customer.order_count == 3
    assert customer.lifetime_value == Decimal("19.99") + Decimal("0.10") + Decimal(
        "100.01"
    ) - Decimal("4.99") - Decimal("0.01")
    assert customer.lifetime_value == Decimal("115.10")
    assert customer.last_order_at == datetime(2026, 5, 3, 10, tzinfo=UTC)
    assert customer.refunded is True  # the latest order has a refund
    # A corrected refund (a newer version of R-1) replaces the old amount, never adds to it.
    erp.post(erp.refund("SO-1", "R-1", "5.99", at="2026-05-04T09:00:00Z"))
    stage()
    assert Customer.objects.get().lifetime_value == Decimal("114.10")


def test_a_guest_and_a_registered_order_for_one_email_are_one_identity(erp, wms):
    erp.post(erp.order("SO-1", email=" Jo@Example.COM ", guest=True))
    registered = erp.order("SO-2", email="jo@example.com")
    registered["identity"]["source_customer_id"] = "C-77"
    erp.post(registered)
    stage()
    customer = Customer.objects.get()
    assert customer.email == "jo@example.com"
    assert customer.email_raw == " Jo@Example.COM "
    assert customer.order_count == 2
    assert customer.is_guest is False


def test_a_changed_email_for_a_known_customer_keeps_the_same_contact(erp):
    def upsert(email, at):
        return erp.event(
            "customer.upserted",
            {"customer_key": "C-1", "source_updated_at": at},
            at=at,
            entity=("customer", "erp:customer:C-1"),
            identity={"email": email, "source_customer_id": "C-1"},
        )

    erp.post(upsert("old@example.com", "2026-05-01T10:00:00Z"))
    stage()
    first = Customer.objects.get()
    erp.post(upsert("new@example.com", "2026-05-02T10:00:00Z"))
    stage()
    customer = Customer.objects.get()
    assert customer.pk == first.pk
    assert customer.email == "new@example.com"
    assert customer.previous_emails == ["old@example.com"]


def test_a_sku_alias_is_applied_before_the_catalogue_check(erp):
    erp.flow.masters_products = True
    erp.flow.save()
    erp.post({"events": [erp.product("TEE-RED-M")], "backfill": True})
    stage()
    mark_catalogue_loaded(erp.flow)
    SkuAlias.objects.create(workspace=erp.workspace, alias_key="tee/red/m", sku="TEE-RED-M")
    line = {
        "sku": " TEE/Red/M ",
        "quantity": 1,
        "line_total": {"amount": "30.00", "currency": "GBP"},
    }
    erp.post(erp.order("SO-1", lines=[line]))
    unknown = {**line, "sku": "MUG-1"}
    erp.post(erp.order("SO-2", lines=[unknown]))
    stage()
    assert SourceEvent.objects.get(entity_key="brightpearl:order:SO-1").state == State.READY
    gap = SourceEvent.objects.get(entity_key="brightpearl:order:SO-2")
    assert gap.state == State.FAILED and gap.failed_kind == "sku_mapping_gap"
    assert Occurrence.objects.get(group__kind="sku_mapping_gap").sku == "MUG-1"


def test_no_sku_is_checked_until_the_catalogue_is_loaded(erp):
    erp.post(
        erp.order(
            "SO-1",
            lines=[
                {
                    "sku": "ANYTHING",
                    "quantity": 1,
                    "line_total": {"amount": "30.00", "currency": "GBP"},
                }
            ],
        )
    )
    stage()
    assert SourceEvent.objects.get().state == State.READY
    assert not Product.objects.exists()


def test_the_sku_fix_from_the_inbox_adds_the_alias_and_releases_the_events(erp, world):
    from exceptions_inbox.kinds import get_kind

    erp.flow.masters_products = True
    erp.flow.save()
    erp.post([erp.product("MUG-BLUE")])
    stage()
    mark_catalogue_loaded(erp.flow)
    erp.post(
        erp.order(
            "SO-1",
            lines=[
                {
                    "sku": "mug_blue",
                    "quantity": 1,
                    "line_total": {"amount": "30.00", "currency": "GBP"},
                }
            ],
        )
    )
    stage()
    group = Occurrence.objects.get().group
    message = get_kind("sku_mapping_gap").fix(group, {"sku": "MUG-BLUE"}, world.admin)
    assert "MUG-BLUE" in message
    stage()
    assert SourceEvent.objects.get(event_type="order.created").state == State.READY
    assert Occurrence.objects.get().state == Occurrence.State.CLEARED


def test_an_order_that_does_not_add_up_opens_order_total_mismatch_and_changes_nothing(erp):
    lines = [
        {"sku": "A", "quantity": 1, "line_total": {"amount": "10.00", "currency": "GBP"}},
        {"sku": "B", "quantity": 1, "line_total": {"amount": "5.00", "currency": "GBP"}},
    ]
    within = erp.order("SO-1", total="15.02", lines=lines)  # one penny per line of tolerance
    beyond = erp.order("SO-2", total="15.03", lines=lines)
    erp.post([within, beyond])
    stage()
    assert states() == {
        within["source_event_id"]: State.READY,
        beyond["source_event_id"]: State.FAILED,
    }
    assert Occurrence.objects.get().group.kind == "order_total_mismatch"
    assert list(Order.objects.values_list("order_number", flat=True)) == ["SO-1"]


def test_tax_is_added_only_when_prices_exclude_it(erp):
    order = erp.order("SO-1", total="12.00")
    order["data"]["tax_inclusive"] = False
    order["data"]["totals"]["tax"] = {"amount": "2.00", "currency": "GBP"}
    order["data"]["lines"][0]["line_total"]["amount"] = "10.00"
    erp.post(order)
    stage()
    assert SourceEvent.objects.get().state == State.READY


def test_an_order_in_another_currency_opens_currency_mismatch(erp):
    erp.post(erp.order("SO-1", currency="EUR"))
    stage()
    event = SourceEvent.objects.get()
    assert event.state == State.FAILED and event.failed_kind == "currency_mismatch"
    assert not Order.objects.exists()


def test_an_order_without_email_opens_contact_without_email_but_keeps_the_order(erp):
    erp.post(erp.order("SO-1", email=None))
    stage()
    event = SourceEvent.objects.get()
    assert event.failed_kind == "contact_without_email"
    assert Order.objects.get().customer is None


def test_a_guest_order_is_held_by_an_excluding_guest_policy(erp):
    erp.flow.guest_policy = "exclude"
    erp.flow.save()
    erp.post(erp.order("SO-1", guest=True))
    stage()
    assert SourceEvent.objects.get().failed_kind == "guest_policy"


def test_resolving_a_group_in_the_inbox_skips_its_events(erp, world):
    from exceptions_inbox.kinds import get_kind

    erp.post(erp.order("SO-1", currency="EUR"))
    stage()
    occurrence = Occurrence.objects.get()
    get_kind("currency_mismatch").on_resolve(
        occurrence.group, [occurrence], world.admin, "test order"
    )
    event = SourceEvent.objects.get()
    assert event.state == State.SKIPPED and "admin" in event.reason and "test order" in event.reason


def test_a_dispatch_can_wait_for_the_carriers_first_scan(erp, wms):
    wms.flow.hold_dispatch_for_scan = True
    wms.flow.save()
    erp.post(erp.order("SO-1"))
    wms.post(wms.dispatch("SO-1", tracking=["TRK1"]))
    stage()
    dispatch = SourceEvent.objects.get(event_type="shipment.dispatched")
    assert dispatch.state == State.HELD and dispatch.hold == SourceEvent.Hold.CARRIER_SCAN
    assert Order.objects.get().last_dispatched_at is not None  # the date counts already
    wms.post(
        wms.event(
            "shipment.carrier_scanned",
            {
                "tracking_number": "TRK1",
                "scan_status": "collected",
                "scanned_at": "2026-05-02T11:00:00Z",
            },
        )
    )
    stage()
    dispatch.refresh_from_db()
    assert dispatch.state == State.READY


def test_stock_snapshots_replace_and_deltas_apply_once_in_as_of_order(wms):
    def stock(mode, as_of, **quantities):
        return wms.event(
            "stock.changed",
            {
                "sku": "TEE",
                "location": {"key": "WH1"},
                "mode": mode,
                "as_of": as_of,
                "quantities": quantities,
            },
            at=as_of,
            entity=("stock", "mintsoft:stock:TEE:WH1"),
        )

    wms.post(stock("snapshot", "2026-05-01T10:00:00Z", on_hand=10, saleable=8))
    stage()
    late_delta = stock("delta", "2026-05-01T09:00:00Z", on_hand=-1, saleable=-1)  # before it: drops
    delta = stock("delta", "2026-05-01T11:00:00Z", on_hand=-2, saleable=-2)
    wms.post([late_delta, delta, delta])
    stage()
    level = StockLevel.objects.get()
    assert (level.on_hand, level.saleable) == (8, 6)
    assert (
        SourceEvent.objects.get(source_event_id=late_delta["source_event_id"]).state
        == State.SKIPPED
    )
    # A newer snapshot replaces; the deltas after it still apply, once.
    wms.post(stock("delta", "2026-05-01T13:00:00Z", saleable=-1))
    wms.post(stock("snapshot", "2026-05-01T12:00:00Z", on_hand=20, saleable=20))
    stage()
    stage()
    level.refresh_from_db()
    assert level.saleable == 19
