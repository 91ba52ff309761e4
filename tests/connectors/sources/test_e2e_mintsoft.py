"""Mintsoft end to end: its order callbacks POSTed to the public webhook (the ExtraCode URL naming
the callback in its query string), its orders, returns and stock polled from a fake Mintsoft
(recorded payloads) by the engine's poller, staged and delivered, and DotDigital's final state
(the sandbox process) read back through DotDigital's API. Last, a Brightpearl sale and a Mintsoft
dispatch of the same order end as one order record."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from accounts.models import Workspace
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Flow, SourceEvent, WebhookRequest
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.pipeline.sources import poll_flow, run_fetch
from tests.connectors.sources.fakes import brightpearl as bp
from tests.connectors.sources.fakes.mintsoft import FakeMintsoft
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "mintsoft"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


DESPATCHED = load("synthetic/callback-despatched.json")  # order 1919, two lines, UPS tracking
DELIVERED = load("synthetic/callback-delivered.json")  # the same order, Tracking Events module
CANCELLED = load("synthetic/callback-cancelled.json")  # order 2207, no email
EMAIL = "test.customer@example.com"  # the callbacks' " Test.Customer@Example.COM ", normalised
NUMBER = DESPATCHED["OrderNumber"]


def as_new(order: dict[str, Any]) -> dict[str, Any]:
    """The recorded order as it was before the warehouse picked it: status NEW, no despatch."""
    new = copy.deepcopy(order)
    new.update(
        OrderStatusId=1,
        DespatchDate=None,
        TrackingNumber=None,
        TrackingURL=None,
        LastUpdated=new["OrderDate"],
    )
    return new


@pytest.fixture
def fake() -> Iterator[FakeMintsoft]:
    server = FakeMintsoft()
    server.start()
    yield server
    server.stop()


class Warehouse:
    """The engine's workspace with a Mintsoft connection and flow, and its webhook."""

    def __init__(self, engine: Engine, fake: FakeMintsoft, join_key: str) -> None:
        self.engine = engine
        self.fake = fake
        self.connection = make_connection(
            engine.workspace,
            "mintsoft",
            name="Mintsoft",
            options={"base_url": fake.url, "client_id": 3, "returns_lookback_days": 1},
            credentials={"api_key": fake.static_key},
        )
        self.token = self.connection.rotate_webhook_token()
        self.flow = Flow.objects.create(
            workspace=engine.workspace,
            name="Mintsoft → DotDigital",
            source=self.connection,
            destination=engine.destination,
            join_key=join_key,
        )
        install_defaults(self.flow)
        mark_backfill_complete(self.flow, by="test")

    def callback(self, order: dict[str, Any], name: str | None) -> dict[str, Any]:
        """Mintsoft calling an order's ExtraCode URL: `/hooks/<token>/?callback=<name>`."""
        url = f"/hooks/{self.token}/" + (f"?callback={name}" if name else "")
        response = self.engine.web.post(
            url, data=json.dumps(order), content_type="application/json"
        )
        assert response.status_code == 202, response.content
        answer: dict[str, Any] = response.json()
        return answer

    def poll(self) -> int:
        """The poller's task body: one cycle (orders, returns, stock) to the present."""
        return poll_flow(self.flow.pk)

    def record(self, collection: str, key: str) -> dict[str, Any] | None:
        sandbox = self.engine.sandbox
        response = sandbox.api.get(f"{sandbox.url}/insightData/v3/account/{collection}/{key}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["json"]
        return found


@pytest.fixture
def warehouse(engine: Engine, fake: FakeMintsoft) -> Warehouse:
    return Warehouse(engine, fake, Flow.JoinKey.ORDER_NUMBER)


def events(event_type: str, state: str = "delivered") -> list[SourceEvent]:
    return list(SourceEvent.objects.filter(event_type=event_type, state=state))


def test_a_polled_new_order_becomes_an_open_order_record_of_its_contact(
    warehouse: Warehouse, fake: FakeMintsoft
):
    fake.orders = [as_new(DESPATCHED)]
    assert warehouse.poll() >= 2
    warehouse.engine.pump()

    record = warehouse.engine.records(EMAIL)[NUMBER]
    assert (record["Status"], record["Fulfilment"]) == ("open", "unfulfilled")
    assert [p["Sku"] for p in record["Products"]] == [
        "TESTSKU",
        "ab-12/RED",
    ]  # trimmed, never recased
    assert warehouse.engine.contact(EMAIL) is not None
    assert events("order.created") and events("order.status_changed")


def test_the_despatch_callback_dispatches_the_order_and_keeps_the_url_that_named_it(
    warehouse: Warehouse, fake: FakeMintsoft
):
    fake.orders = [as_new(DESPATCHED)]
    warehouse.poll()
    warehouse.engine.pump()

    answer = warehouse.callback(DESPATCHED, "despatched")
    warehouse.engine.pump()

    record = warehouse.engine.records(EMAIL)[NUMBER]
    assert record["Dispatched"] is True
    assert record["Fulfilment"] == "dispatched"
    assert record["TrackingNumbers"] == ["1Z999AA10123456784"]
    assert record["FirstDispatchedAt"] == "2026-02-04T18:45:10Z"  # London in winter is UTC
    assert "DeliveryStatus" not in record  # despatch is not carrier movement
    assert events("shipment.dispatched")
    stored = WebhookRequest.objects.get(pk=answer["request_id"])
    assert stored.headers[":query"] == "callback=despatched"


def test_the_delivered_callback_is_the_carrier_scan_that_marks_the_order_delivered(
    warehouse: Warehouse,
):
    warehouse.callback(DESPATCHED, "despatched")
    warehouse.callback(DELIVERED, "delivered")
    warehouse.engine.pump()

    record = warehouse.engine.records(EMAIL)[NUMBER]
    assert record["Dispatched"] is True
    assert record["DeliveryStatus"] == "delivered"
    assert "FirstScanAt" in record
    assert events("shipment.carrier_scanned")


def test_the_same_order_json_is_told_apart_only_by_the_callback_its_url_names(
    warehouse: Warehouse,
):
    # Without a name, a delivery can never be inferred from the body: a despatch at most.
    unnamed = warehouse.callback(DELIVERED, None)
    assert not SourceEvent.objects.filter(event_type="shipment.carrier_scanned").exists()
    named = warehouse.callback(DELIVERED, "delivered")
    assert SourceEvent.objects.filter(event_type="shipment.carrier_scanned").count() == 1
    assert ":query" not in WebhookRequest.objects.get(pk=unnamed["request_id"]).headers
    assert WebhookRequest.objects.get(pk=named["request_id"]).headers[":query"] == (
        "callback=delivered"
    )
    unknown = warehouse.engine.web.post(
        f"/hooks/{warehouse.token}/?callback=lost",
        data=json.dumps(DELIVERED),
        content_type="application/json",
    )
    assert unknown.status_code == 400
    assert "Unknown callback 'lost'" in unknown.content.decode()


def test_the_cancel_callback_cancels_the_order_record(warehouse: Warehouse, fake: FakeMintsoft):
    email = "sig@example.com"  # the recorded order has none: given one so DotDigital can hold it
    placed = {**as_new(CANCELLED), "Email": email}
    fake.orders = [placed]
    warehouse.poll()
    warehouse.engine.pump()
    assert warehouse.engine.records(email)[CANCELLED["OrderNumber"]]["Status"] == "open"

    warehouse.callback({**CANCELLED, "Email": email}, "cancelled")
    warehouse.engine.pump()

    assert warehouse.engine.records(email)[CANCELLED["OrderNumber"]]["Status"] == "cancelled"
    assert len(events("order.status_changed")) == 2


def test_a_polled_return_is_delivered_against_its_order(warehouse: Warehouse, fake: FakeMintsoft):
    fake.orders = [DESPATCHED]
    warehouse.poll()
    warehouse.engine.pump()
    calls = warehouse.engine.sandbox.calls()
    after_id = int(calls[-1]["id"])

    today = datetime.now(ZoneInfo("Europe/London")).date()
    returns = load("synthetic/return-search-by-date.json")
    fake.returns_by_date = {(today - timedelta(days=1)).isoformat(): returns[:1]}
    warehouse.poll()
    warehouse.engine.pump()

    (received,) = events("return.received")
    assert received.order is not None and received.order.order_number == NUMBER
    writes = [
        c["path"]
        for c in warehouse.engine.sandbox.calls(after_id=after_id)
        if c["method"] in ("PUT", "POST", "PATCH")
    ]
    assert "/insightData/v3/import" in writes  # the order record, written again with it
    assert warehouse.engine.records(EMAIL)[NUMBER]["Dispatched"] is True


def test_polled_stock_by_location_becomes_each_skus_saleable_stock_record(
    warehouse: Warehouse, fake: FakeMintsoft
):
    fake.stock = {"": load("products-in-location-report.json")}
    warehouse.poll()
    warehouse.engine.pump()

    changed = events("stock.changed")
    assert changed
    saleable: dict[str, int] = {}
    for event in changed:
        sku = event.data["sku"]
        saleable[sku] = saleable.get(sku, 0) + int(event.data["quantities"]["saleable"])
    assert saleable["PRODUCT1"] == 21  # the report's rows for it, summed
    for sku, units in saleable.items():
        record = warehouse.record("Stock", sku)
        assert record is not None, sku
        assert (record["Saleable"], record["InStock"]) == (units, units > 0), sku


# -- one order, two systems -------------------------------------------------------------------


@pytest.fixture
def brightpearl() -> Iterator[bp.FakeBrightpearl]:
    server = bp.FakeBrightpearl()
    sale = bp.load("order-get-sales-order.json")["response"][0]
    server.orders = {1: {**sale, "externalRef": WEB_ORDER}}
    server.start()
    yield server
    server.stop()


WEB_ORDER = "#1001"  # the web shop's order number, which both systems keep
WAREHOUSE_EVENTS = [
    "shipment.dispatched",
    "shipment.carrier_scanned",
    "shipment.tracking_updated",
    "return.received",
    "stock.changed",
]


def test_a_brightpearl_sale_and_a_mintsoft_dispatch_of_it_end_as_one_order_record(
    engine: Engine, fake: FakeMintsoft, brightpearl: bp.FakeBrightpearl
):
    Workspace.objects.filter(pk=engine.workspace.pk).update(currency="USD")  # the recorded sale's
    erp = make_connection(
        engine.workspace,
        "brightpearl",
        name="Brightpearl",
        options={"account_code": "acme", "base_url": f"{brightpearl.url}/public-api/acme"},
        credentials={"app_ref": "syncdesk", "account_token": "private-token"},
    )
    erp_token = erp.rotate_webhook_token()
    erp_flow = Flow.objects.create(
        workspace=engine.workspace,
        name="Brightpearl → DotDigital",
        source=erp,
        destination=engine.destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
    )
    install_defaults(erp_flow)
    mark_backfill_complete(erp_flow, by="test")
    # The ERP brings the order and its money; the warehouse's flow takes what happens in the
    # warehouse (connectors/sources/mintsoft/README.md, "Beside an ERP"), joined on the web order number
    # Brightpearl keeps as its external reference and Mintsoft as its ExternalOrderReference.
    wms = Warehouse(engine, fake, Flow.JoinKey.CHANNEL_ORDER_REF)
    Flow.objects.filter(pk=wms.flow.pk).update(event_types=WAREHOUSE_EVENTS)
    email = "demo@test.com"
    dispatched = {**DESPATCHED, "ExternalOrderReference": WEB_ORDER, "Email": email}

    notification = {**bp.load("synthetic/webhook-order-modified.json"), "id": "1"}
    response = engine.web.post(
        f"/hooks/{erp_token}/", data=json.dumps(notification), content_type="application/json"
    )
    assert response.status_code == 202
    run_fetch()
    wms.callback(dispatched, "despatched")
    wms.callback({**DELIVERED, "ExternalOrderReference": WEB_ORDER, "Email": email}, "delivered")
    engine.pump()

    records = engine.records(email)
    assert list(records) == ["1"]
    record = records["1"]
    assert (record["GrandTotal"], record["Currency"]) == (10, "USD")  # Brightpearl's money
    assert record["ChannelOrderRef"] == WEB_ORDER
    assert [p["Sku"] for p in record["Products"]] == ["TEST001"]  # Brightpearl's lines
    assert record["Dispatched"] is True  # Mintsoft's dispatch
    assert record["TrackingNumbers"] == ["1Z999AA10123456784"]
    assert record["DeliveryStatus"] == "delivered"  # and Mintsoft's delivery
    for event_type in ("order.created", "shipment.dispatched", "shipment.carrier_scanned"):
        assert events(event_type), event_type
    skipped = SourceEvent.objects.filter(connection=wms.connection, state="skipped")
    assert {e.event_type for e in skipped} == {"order.created", "order.status_changed"}


def test_a_warehouse_flow_taking_order_events_too_still_ends_as_one_order_record(
    engine: Engine, fake: FakeMintsoft, brightpearl: bp.FakeBrightpearl
):
    Workspace.objects.filter(pk=engine.workspace.pk).update(currency="USD")
    erp = make_connection(
        engine.workspace,
        "brightpearl",
        name="Brightpearl",
        options={"account_code": "acme", "base_url": f"{brightpearl.url}/public-api/acme"},
        credentials={"app_ref": "syncdesk", "account_token": "private-token"},
    )
    erp_token = erp.rotate_webhook_token()
    erp_flow = Flow.objects.create(
        workspace=engine.workspace,
        name="Brightpearl → DotDigital",
        source=erp,
        destination=engine.destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
    )
    install_defaults(erp_flow)
    mark_backfill_complete(erp_flow, by="test")
    wms = Warehouse(engine, fake, Flow.JoinKey.CHANNEL_ORDER_REF)  # every event type
    email = "demo@test.com"
    currency = {**DESPATCHED["Currency"], "Code": "USD"}
    dispatched = {
        **DESPATCHED,
        "ExternalOrderReference": WEB_ORDER,
        "Email": email,
        "Currency": currency,
    }
    notification = {**bp.load("synthetic/webhook-order-modified.json"), "id": "1"}
    engine.web.post(
        f"/hooks/{erp_token}/", data=json.dumps(notification), content_type="application/json"
    )
    run_fetch()
    wms.callback(dispatched, "despatched")
    engine.pump()

    records = engine.records(email)
    assert list(records) == ["1"]
    assert records["1"]["GrandTotal"] == 10
    assert records["1"]["Dispatched"] is True


# -- data signals reach the operators ---------------------------------------------------------


def test_a_polled_order_in_failed_or_an_unknown_status_opens_a_source_warning(
    warehouse: Warehouse, fake: FakeMintsoft
):
    failed = {**as_new(DESPATCHED), "OrderStatusId": 8}  # FAILED: an integration error
    unknown = {**as_new(DESPATCHED), "ID": 1930, "OrderNumber": "W-99", "OrderStatusId": 99}
    fake.orders = [failed, unknown]
    warehouse.poll()

    groups = {g.subject_label: g for g in ExceptionGroup.objects.filter(kind="source_warning")}
    assert len(groups) == 2
    (failed_group,) = [g for m, g in groups.items() if "8:FAILED" in m]
    (unknown_group,) = [g for m, g in groups.items() if "status 99 " in m]
    assert failed_group.flow_key == warehouse.flow.key
    assert list(
        Occurrence.objects.filter(group=unknown_group).values_list("order_number", flat=True)
    ) == ["W-99"]
    warehouse.poll()  # the same orders read again: no new group, no new occurrence
    assert ExceptionGroup.objects.filter(kind="source_warning").count() == 2
    assert Occurrence.objects.filter(group__kind="source_warning").count() == 2


def test_a_callback_whose_order_is_in_an_unknown_status_opens_a_source_warning(
    warehouse: Warehouse,
):
    warehouse.callback({**DESPATCHED, "OrderStatusId": 99}, None)
    warehouse.engine.pump()

    (group,) = ExceptionGroup.objects.filter(kind="source_warning")
    assert "Mintsoft status 99 is not in the connection's status map" in group.subject_label
    assert Occurrence.objects.get(group=group).order_number == NUMBER


# -- split orders -----------------------------------------------------------------------------

SPLIT_PART_2 = load("synthetic/order-split-part2-despatched.json")  # ID 1920, part 2 of 2


def test_each_despatched_part_of_a_split_order_is_its_own_shipment_of_the_one_order(
    warehouse: Warehouse,
):
    part_1 = {**DESPATCHED, "Part": 1, "NumberOfParts": 2}
    warehouse.callback(part_1, "despatched")
    warehouse.engine.pump()
    record = warehouse.engine.records(EMAIL)[NUMBER]
    assert record["Fulfilment"] == "partially_dispatched"
    assert record["Dispatched"] is True  # the first parcel left

    warehouse.callback(SPLIT_PART_2, "despatched")
    warehouse.engine.pump()

    records = warehouse.engine.records(EMAIL)
    assert list(records) == [NUMBER]  # parts share the order number: one record
    assert len(events("shipment.dispatched")) == 2


def test_a_split_order_is_dispatched_once_its_last_part_is(warehouse: Warehouse):
    warehouse.callback({**DESPATCHED, "Part": 1, "NumberOfParts": 2}, "despatched")
    warehouse.callback(SPLIT_PART_2, "despatched")
    warehouse.engine.pump()

    assert warehouse.engine.records(EMAIL)[NUMBER]["Fulfilment"] == "dispatched"
