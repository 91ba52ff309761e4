"""An order key names an order in its source's own key space: a shipment, refund or return from
the same source system as its order joins on it (in `data` or `links`) whatever the flow's join
key; across sources the join key decides. Posted to the public webhooks of a demo ERP flow (join
key: order number) and a demo WMS flow (join key: channel order reference), read back from the
DotDigital sandbox through its API."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.urls import reverse

from exceptions_inbox.models import Occurrence
from monitoring.models import OrderKey, SourceEvent
from monitoring.pipeline.staging.run import run_staging
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, WMS, Engine, event, iso

pytestmark = pytest.mark.django_db(transaction=True)

State = SourceEvent.State
ERP_KEY = "demo-erp:erp-main:order:{}"


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def order_created(number: str, email: str, amount: str, *, at: datetime) -> dict[str, Any]:
    return event(
        ERP,
        "order.created",
        f"order:{number}",
        f"order:{number}:created",
        {
            "order_key": ERP_KEY.format(number),
            "order_number": number,
            "channel_order_ref": f"CH-{number}",
            "placed_at": iso(at),
            "currency": "GBP",
            "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
            "lines": [
                {"line_key": "1", "sku": "HAT-1", "quantity": 1, "line_total": money(amount)}
            ],
            "totals": {"grand_total": money(amount)},
        },
        at=at,
        email=email,
        customer_id="C1",
    )


def named_by(form: str, number: str) -> tuple[tuple[str, str], str, dict[str, Any]]:
    """(source, the child's own data.order_key, its links) naming order `number` by `form`."""
    if form == "data.order_key":  # the ERP's own key, nothing else
        return ERP, ERP_KEY.format(number), {}
    if form == "links.order_key":  # data.order_key names another document of the ERP's
        return ERP, f"demo-erp:erp-main:document:{number}", {"order_key": ERP_KEY.format(number)}
    # The flow's join key: the WMS names the ERP's order by its channel reference.
    return WMS, f"demo-wms:wh-1:order:{number}", {"channel_order_ref": f"CH-{number}"}


def dispatched(number: str, form: str, *, at: datetime) -> dict[str, Any]:
    source, order_key, links = named_by(form, number)
    return event(
        source,
        "shipment.dispatched",
        f"shipment:{number}-1",
        f"despatch:{number}-1",
        {
            "shipment_key": f"{source[0]}:shipment:{number}-1",
            "order_key": order_key,
            "dispatched_at": iso(at),
            "lines": [{"sku": "HAT-1", "quantity": 1}],
            "carrier": {"code": "royal-mail", "name": "Royal Mail"},
        },
        at=at,
        links=links,
    )


def refunded(number: str, form: str, amount: str, *, at: datetime) -> dict[str, Any]:
    source, order_key, links = named_by(form, number)
    return event(
        source,
        "refund.issued",
        f"refund:{number}-r1",
        f"refund:{number}-r1",
        {
            "refund_key": f"{source[0]}:refund:{number}-r1",
            "order_key": order_key,
            "refunded_at": iso(at),
            "amount": money(amount),
        },
        at=at,
        links=links,
    )


def returned(number: str, *, at: datetime) -> dict[str, Any]:
    return event(
        ERP,
        "return.received",
        f"return:{number}-1",
        f"return:{number}-1",
        {
            "return_key": f"demo-erp:return:{number}-1",
            "order_key": ERP_KEY.format(number),
            "received_at": iso(at),
            "lines": [{"sku": "HAT-1", "quantity": 1}],
        },
        at=at,
    )


def event_of(posted: dict[str, Any]) -> SourceEvent:
    return SourceEvent.objects.get(source_event_id=posted["source_event_id"])


FORMS = ["data.order_key", "links.order_key", "the flow's join key"]


@pytest.mark.parametrize("form", FORMS)
def test_a_dispatch_naming_its_order_by_each_key_form_sets_dispatched_and_last_dispatch_date(
    engine: Engine, form: str
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NW1", "ana@example.com", "120.00", at=now)])
    engine.pump()
    assert engine.records("ana@example.com")["NW1"]["Dispatched"] is False
    shipped_at = now + timedelta(seconds=30)
    source = "erp" if named_by(form, "NW1")[0] == ERP else "wms"
    answer = engine.post(source, [dispatched("NW1", form, at=shipped_at)])
    assert answer["results"][0]["status"] == "accepted"
    engine.pump()

    assert engine.records("ana@example.com")["NW1"]["Dispatched"] is True
    contact = engine.contact("ana@example.com")
    assert contact is not None
    assert contact["dataFields"]["LAST_DISPATCH_DATE"].startswith(iso(shipped_at)[:19])
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {State.DELIVERED}


@pytest.mark.parametrize("form", FORMS)
def test_a_refund_naming_its_order_by_each_key_form_reverses_ltv_exactly(engine: Engine, form: str):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NW2", "bo@example.com", "120.00", at=now)])
    engine.pump()
    source = "erp" if named_by(form, "NW2")[0] == ERP else "wms"
    engine.post(source, [refunded("NW2", form, "45.51", at=now + timedelta(seconds=30))])
    engine.pump()

    contact = engine.contact("bo@example.com")
    assert contact is not None
    assert Decimal(str(contact["dataFields"]["LTV"])) == Decimal("74.49")
    assert contact["dataFields"]["REFUNDED"] is True
    assert engine.records("bo@example.com")["NW2"]["Refunded"] is True
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {State.DELIVERED}
    assert not Occurrence.objects.exists()


def test_a_return_naming_its_order_by_the_erps_order_key_joins_it(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NW3", "cy@example.com", "20.00", at=now)])
    engine.pump()
    posted = returned("NW3", at=now + timedelta(minutes=1))
    engine.post("erp", [posted])
    engine.pump()
    assert event_of(posted).state == State.DELIVERED
    assert event_of(posted).order is not None and event_of(posted).order.order_number == "NW3"


def test_across_sources_an_order_key_names_nothing_and_the_join_key_decides(engine: Engine):
    """The WMS's key space is not the ERP's: a WMS dispatch carrying the ERP's key string and no
    channel reference waits for its order, saying which key it waits for."""
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NW4", "di@example.com", "10.00", at=now)])
    engine.pump()
    stray = dispatched("NW4", "the flow's join key", at=now + timedelta(seconds=5))
    stray["data"]["order_key"] = ERP_KEY.format("NW4")
    stray["links"] = {}
    engine.post("wms", [stray])
    engine.pump()

    held = event_of(stray)
    assert held.state == State.HELD and held.hold == SourceEvent.Hold.ORPHAN
    assert f"key {ERP_KEY.format('NW4')} of demo-wms" in held.reason
    assert engine.records("di@example.com")["NW4"]["Dispatched"] is False


def test_an_orphan_naming_its_order_by_key_says_so_on_its_timeline_and_joins_when_it_arrives(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    early = refunded("NW5", "links.order_key", "5.00", at=now)
    engine.post("erp", [early])
    run_staging()
    held = event_of(early)
    assert held.state == State.HELD
    waits = "or key demo-erp:erp-main:order:NW5 of demo-erp"
    assert held.reason.startswith("Waiting for order key ") and waits in held.reason
    member = make_member(engine.workspace, "watcher")
    engine.web.force_login(member)
    page = engine.web.get(
        reverse("monitoring:events", args=[engine.workspace.slug]),
        {"q": held.source_event_id},
    ).content.decode()
    assert waits in page

    # The order comes under its number and its own key: the orphan is released at once (no
    # waiting for its next look) and joined.
    engine.post("erp", [order_created("NW5", "ed@example.com", "30.00", at=now)])
    run_staging()
    assert event_of(early).state == State.READY
    engine.pump()
    contact = engine.contact("ed@example.com")
    assert contact is not None
    assert Decimal(str(contact["dataFields"]["LTV"])) == Decimal("25.00")
    assert OrderKey.objects.get(order_key=ERP_KEY.format("NW5")).order.order_number == "NW5"


def test_orders_staged_before_order_keys_get_their_keys_from_their_order_events(erp, wms):
    """Migration 0013 fills the keys of orders staged before it from their order events, the
    first order seen with a key keeping it."""
    erp.post([erp.order("SO-1"), erp.order("SO-2")])
    wms.post(wms.order("SO-1"))
    run_staging()
    expected = set(OrderKey.objects.values_list("source_system", "order_key", "order_id"))
    assert len(expected) == 3
    OrderKey.objects.all().delete()

    migration = importlib.import_module("monitoring.migrations.0014_order_keys")
    migration.keys_from_events(apps, None)

    assert set(OrderKey.objects.values_list("source_system", "order_key", "order_id")) == expected
