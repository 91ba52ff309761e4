"""Delivery, end to end: events posted to the public webhooks of a demo ERP flow and a demo WMS
flow end in the DotDigital sandbox as one contact per person, exact order records and
aggregates, and list memberships that follow dispatches and refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from monitoring.models import DeliveryBatch, Operation, OperationEvent, SourceEvent
from monitoring.pipeline.mapping import DISPATCHED_TODAY, RECENT_BUYERS
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, WMS, Engine, event, iso

pytestmark = pytest.mark.django_db(transaction=True)


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def order_created(
    number: str,
    email: str,
    amount: str,
    *,
    at: datetime,
    customer: str | None = "C1",
    guest: bool = False,
) -> dict[str, Any]:
    line = {
        "line_key": f"{number}-1",
        "sku": "HAT-1/RED",
        "sku_raw": "HAT-1/RED",
        "name": "Wool Beanie",
        "quantity": 1,
        "unit_price": money(amount),
        "line_subtotal": money(amount),
        "line_discount": money("0.00"),
        "line_total": money(amount),
    }
    return event(
        ERP,
        "order.created",
        f"order:{number}",
        f"order:{number}:created",
        {
            "order_key": f"demo-erp:erp-main:order:{number}",
            "order_number": number,
            "channel_order_ref": number,
            "placed_at": iso(at),
            "currency": "GBP",
            "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
            "lines": [line],
            "tax_inclusive": True,
            "is_guest": guest,
            "shipping": {"method": "Tracked 48", "amount": money("0.00")},
            "totals": {
                "subtotal": money(amount),
                "discount": money("0.00"),
                "shipping": money("0.00"),
                "tax": money("0.00"),
                "grand_total": money(amount),
                "tax_inclusive": True,
            },
        },
        at=at,
        email=email,
        guest=guest,
        customer_id=None if guest else customer,
        source_ref=number,
    )


def dispatched(number: str, *, at: datetime) -> dict[str, Any]:
    return event(
        WMS,
        "shipment.dispatched",
        f"shipment:{number}-1",
        f"despatch:{number}-1",
        {
            "shipment_key": f"demo-wms:wh-1:shipment:{number}-1",
            "order_key": f"demo-wms:wh-1:order:{number}",
            "dispatched_at": iso(at),
            "lines": [{"sku": "HAT-1/RED", "quantity": 1}],
            "carrier": {"code": "royal-mail", "name": "Royal Mail"},
            "tracking_numbers": ["TT123GB"],
        },
        at=at,
        links={"channel_order_ref": number},
        source_ref=number,
    )


def refunded(number: str, amount: str, *, at: datetime) -> dict[str, Any]:
    return event(
        ERP,
        "refund.issued",
        f"refund:{number}-r1",
        f"refund:{number}-r1",
        {
            "refund_key": f"demo-erp:erp-main:refund:{number}-r1",
            "order_key": f"demo-erp:erp-main:order:{number}",
            "refunded_at": iso(at),
            "amount": money(amount),
        },
        at=at,
        links={"channel_order_ref": number},
        source_ref=number,
    )


def list_names(engine: Engine, email: str) -> set[str]:
    state = engine.sandbox.state()
    names = {lst["id"]: lst["name"] for lst in state["lists"]}
    contact = next(c for c in state["contacts"] if c["identifiers"].get("email") == email)
    return {names[item["id"]] for item in contact.get("lists", [])}


def test_it_writes_one_contact_per_person_with_exact_orders_and_aggregates(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post(
        "erp",
        [
            order_created("NW1", "jo@example.com", "50.00", at=now - timedelta(minutes=3)),
            # The same person as a guest, with the email spelt differently.
            order_created(
                "NW2", "  Jo@Example.com ", "30.25", at=now - timedelta(minutes=2), guest=True
            ),
            order_created("NW3", "sam@example.com", "19.99", at=now, customer="C2"),
        ],
    )
    engine.pump()

    state = engine.sandbox.state()
    emails = sorted(c["identifiers"]["email"] for c in state["contacts"])
    assert emails == ["jo@example.com", "sam@example.com"]
    jo = engine.contact("jo@example.com")
    assert jo is not None
    fields = jo["dataFields"]
    assert fields["ORDER_COUNT"] == 2
    assert Decimal(str(fields["LTV"])) == Decimal("80.25")
    assert fields["LAST_ORDER_DATE"].startswith(iso(now - timedelta(minutes=2))[:16])
    assert fields["REFUNDED"] is False
    records = engine.records("jo@example.com")
    assert set(records) == {"NW1", "NW2"}
    assert records["NW2"]["GrandTotal"] == 30.25
    assert records["NW1"]["Products"][0]["Sku"] == "HAT-1/RED"
    # A contact created from an order carries no subscription change.
    assert jo["channelProperties"]["email"]["status"] == "subscribed"
    assert SourceEvent.objects.filter(state="delivered").count() == 3
    assert not Operation.objects.exclude(state="delivered").exists()


def test_a_refund_of_an_order_sold_by_the_erp_and_dispatched_by_the_wms_sets_refunded_and_leaves_post_purchase_lists(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NW10", "ana@example.com", "120.00", at=now)])
    engine.pump()
    engine.post("wms", [dispatched("NW10", at=now + timedelta(seconds=5))])
    engine.pump()

    assert list_names(engine, "ana@example.com") == {DISPATCHED_TODAY, RECENT_BUYERS}
    record = engine.records("ana@example.com")["NW10"]
    assert record["GrandTotal"] == 120  # the ERP's money…
    assert record["Dispatched"] is True and record["Carrier"] == "Royal Mail"  # …the WMS's dispatch

    engine.post("erp", [refunded("NW10", "120.00", at=now + timedelta(seconds=10))])
    engine.pump()

    contact = engine.contact("ana@example.com")
    assert contact is not None
    assert contact["dataFields"]["REFUNDED"] is True
    assert Decimal(str(contact["dataFields"]["LTV"])) == Decimal("0")
    assert engine.records("ana@example.com")["NW10"]["Refunded"] is True
    assert list_names(engine, "ana@example.com") == {RECENT_BUYERS}
    assert SourceEvent.objects.filter(state="delivered").count() == 3


def test_it_coalesces_writes_of_one_destination_key_and_sends_the_newest_state(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    from monitoring.pipeline.plan import run_planning
    from monitoring.pipeline.staging.run import run_staging

    engine.post("erp", [order_created("NW20", "lee@example.com", "10.00", at=now)])
    run_staging()
    run_planning()
    engine.post(
        "erp",
        [order_created("NW21", "lee@example.com", "15.00", at=now + timedelta(seconds=1))],
    )
    run_staging()
    run_planning()

    contact_ops = Operation.objects.filter(key="contact:lee@example.com")
    assert contact_ops.count() == 1  # one open write, carrying both events
    op = contact_ops.get()
    assert op.version == 2
    assert op.payload["fields"]["ORDER_COUNT"]["value"] == 2
    assert OperationEvent.objects.filter(operation=op).count() == 2

    engine.pump()
    contact = engine.contact("lee@example.com")
    assert contact is not None and contact["dataFields"]["ORDER_COUNT"] == 2
    assert SourceEvent.objects.filter(state="delivered").count() == 2


def test_the_bulk_lane_batches_into_imports_and_confirms_them_by_polling(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        order_created(f"NB{i}", f"p{i}@example.com", "5.00", at=now, customer=f"B{i}")
        for i in range(30)
    ]
    from monitoring.pipeline.ingest import ingest_events

    ingest_events(engine.erp, events, via="backfill", backfill=True)  # the bulk lane
    engine.pump()

    assert SourceEvent.objects.filter(state="delivered").count() == 30
    batches = DeliveryBatch.objects.all()
    assert {b.kind for b in batches} == {"contacts", "insight"}
    assert all(b.state == "finished" for b in batches)
    assert batches.count() <= 4  # not a call per event
    assert engine.sandbox.state()["counts"]["contacts"] == 30


def test_the_bulk_lane_sends_once_its_writes_that_can_go_fill_a_batch(engine: Engine, monkeypatch):
    from monitoring.pipeline import deliver
    from monitoring.pipeline.ingest import ingest_events
    from monitoring.pipeline.plan import run_planning
    from monitoring.pipeline.staging.run import run_staging

    # Neither wait runs out: only the batch's size decides.
    monkeypatch.setattr(deliver, "BULK_MAX_WAIT", timedelta(hours=1))
    monkeypatch.setattr(deliver, "BULK_IDLE_WAIT", timedelta(hours=1))
    monkeypatch.setattr(deliver, "BULK_MIN", 3)
    now = datetime.now(UTC).replace(microsecond=0)

    def backfill(*numbers: int) -> None:
        orders = [
            order_created(f"NB{i}", f"p{i}@example.com", "5.00", at=now, customer=f"B{i}")
            for i in numbers
        ]
        ingest_events(engine.erp, orders, via="backfill", backfill=True)
        run_staging()
        run_planning()

    def can_go() -> int:
        return deliver.due_operations(engine.destination.pk, "bulk").count()

    backfill(1)
    assert not deliver.bulk_batch_ready(engine.destination.pk)
    # Four writes due, but each order record waits for its new contact's: two can go.
    backfill(2)
    assert Operation.objects.filter(lane="bulk", state="pending").count() >= 4
    assert can_go() == 2
    assert not deliver.bulk_batch_ready(engine.destination.pk)
    backfill(3)
    assert can_go() == 3
    assert deliver.bulk_batch_ready(engine.destination.pk)


def test_a_realtime_record_does_not_wait_for_the_bulk_lanes_batch_of_its_contact(engine: Engine):
    from monitoring.pipeline.lanes import run_lane
    from monitoring.pipeline.plan import run_planning
    from monitoring.pipeline.staging.run import run_staging

    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("RB1", "bo@example.com", "15.00", at=now)])
    run_staging()
    run_planning()
    # Its contact's upsert sits in the bulk lane, which would wait to fill a batch.
    Operation.objects.filter(kind="contact").update(lane="bulk")

    run_lane(engine.destination.pk, "realtime", time_budget=10.0, linger=0.0, idle_sleep=0.02)

    assert Operation.objects.get(kind="contact").state == "delivered"
    assert set(engine.records("bo@example.com")) == {"RB1"}
    assert SourceEvent.objects.get().state == "delivered"


def test_an_imports_outcomes_are_recorded_a_slice_at_a_time_and_a_poller_lost_between_slices_leaves_the_rest_to_the_next(  # noqa: E501
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """A finished import's operations are recorded a few hundred to a transaction, so planning a
    newer write of one of them waits a moment, not for the whole import. A poller that dies
    between slices leaves the import submitted with the rest still sent: the next poll finishes
    those, and nothing is delivered twice."""
    import time

    from monitoring.pipeline import confirm, deliver
    from monitoring.pipeline.destination import client_for
    from monitoring.pipeline.ingest import ingest_events
    from monitoring.pipeline.plan import run_planning
    from monitoring.pipeline.staging.run import run_staging

    monkeypatch.setattr(confirm, "FINISH_SLICE", 2)
    now = datetime.now(UTC).replace(microsecond=0)
    orders = [
        order_created(f"SL{i}", f"slice{i}@example.com", "5.00", at=now, customer=f"S{i}")
        for i in range(5)
    ]
    ingest_events(engine.erp, orders, via="backfill", backfill=True)
    run_staging()
    run_planning()
    assert deliver.send_due(engine.destination, "bulk") == 5  # the five new contacts
    batch = DeliveryBatch.objects.get(lane="bulk", kind="contacts")
    client = client_for(engine.destination, "bulk")

    slices: list[int] = []
    record_results = confirm.record_results

    def lost_after_one_slice(results: Any, **kwargs: Any) -> Any:
        if slices:
            raise RuntimeError("the poller's worker was killed")
        slices.append(len(results))
        return record_results(results, **kwargs)

    monkeypatch.setattr(confirm, "record_results", lost_after_one_slice)
    for _ in range(100):
        try:
            confirm.run_confirmation(client, engine.destination.pk, "bulk")
        except RuntimeError:
            break
        time.sleep(0.05)
        DeliveryBatch.objects.filter(pk=batch.pk).update(next_attempt_at=datetime.now(UTC))
    contacts = Operation.objects.filter(batch=batch)
    assert slices == [2]
    assert sorted(contacts.values_list("state", flat=True)) == [
        "delivered", "delivered", "sent", "sent", "sent"
    ]  # fmt: skip
    batch.refresh_from_db()
    assert batch.state == DeliveryBatch.State.SUBMITTED

    monkeypatch.setattr(confirm, "record_results", record_results)
    DeliveryBatch.objects.filter(pk=batch.pk).update(
        lease_owner="", lease_until=None, next_attempt_at=datetime.now(UTC)
    )
    assert confirm.run_confirmation(client, engine.destination.pk, "bulk") == 1
    batch.refresh_from_db()
    assert batch.state == DeliveryBatch.State.FINISHED
    assert set(contacts.values_list("state", flat=True)) == {"delivered"}
    assert OperationEvent.objects.filter(operation__batch=batch, outcome="delivered").count() == 5
    engine.pump()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}
