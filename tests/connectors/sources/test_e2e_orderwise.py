"""OrderWise end to end: export-definition rows polled from a fake OrderWise server by the engine's
own poller (`poll_flow`), staged and delivered to the DotDigital sandbox, read back through
DotDigital's API.

The rows are synthetic (no OrderWise payload is public) in the columns of the setup page's SQL.
Covered: customer.upserted, order.created, order.status_changed, shipment.dispatched,
refund.issued (a credit note), product.updated and stock.changed; web orders on the shared web
account become guests keyed by their own email, not one person; an unknown status changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from connectors.sources.orderwise.api import _TOKENS
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Flow, SourceEvent
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.pipeline.sources import poll_flow
from tests.connectors.sources.fakes.orderwise import FakeOrderwise
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STATUS_MAP = {
    "Awaiting despatch": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
    "Completed": {"lifecycle": "closed", "fulfilment": "dispatched"},
}
DEFINITIONS = {"products": "15", "customers": "14", "orders": "11", "deliveries": "12",
               "credit_notes": "13", "stock": "16"}  # fmt: skip


def order_rows(
    oh_id: int,
    number: str,
    *,
    email: str,
    cu_id: str,
    status: str = "Awaiting despatch",
    amended: str = "2026-05-27 11:00:00",
) -> list[dict[str, Any]]:
    """One order of two lines priced ex VAT: 2 × 10.00 net + 4.00 VAT + 3.99 delivery = 27.99."""
    head = {
        "row_id": oh_id, "amended": amended, "oh_order_number": number, "oh_cust_order_ref": f"#WEB{oh_id}",
        "oh_datetime": "2026-05-27 10:30:00", "os_description": status, "cu_id": cu_id, "cu_account": f"ACC-{cu_id}",
        "contact_email": email, "contact_first_name": email.split("@")[0].title(), "contact_last_name": "Bloggs",
        "currency_code": "GBP", "oh_net": 20.00, "oh_tax": 4.00, "oh_gross": 27.99, "oh_delivery_gross": 3.99,
    }  # fmt: skip
    return [
        {**head, "ol_id": oh_id * 10 + n, "vad_variant_code": f"SKU-{n}", "vad_description": f"Thing {n}",
         "ol_quantity": 1, "ol_unit_price": 10.00, "ol_net": 10.00, "ol_tax": 2.00, "ol_gross": 12.00}
        for n in range(2)
    ]  # fmt: skip


def seeded() -> dict[str, list[dict[str, Any]]]:
    return {
        "15": [
            {
                "row_id": 1,
                "amended": "2026-05-20 09:00:00",
                "vad_variant_code": "SKU-0",
                "vad_description": "Thing 0",
                "vafp_rsp_exc_vat": 10.00,
                "vad_active": 1,
            },
            {
                "row_id": 2,
                "amended": "2026-05-20 09:00:00",
                "vad_variant_code": "SKU-1",
                "vad_description": "Thing 1",
                "vafp_rsp_exc_vat": 10.00,
                "vad_active": 1,
            },
        ],  # fmt: skip
        "14": [
            {
                "row_id": 1,
                "amended": "2026-05-21 09:00:00",
                "cu_id": "C100",
                "cu_account": "ACC-C100",
                "contact_id": 1,
                "contact_email": " Jo@Example.com ",
                "contact_first_name": "Jo",
                "contact_last_name": "Bloggs",
                "cu_name": "Jo Bloggs",
            },
            # The web store's shared account: not a person.
            {
                "row_id": 2,
                "amended": "2026-05-21 09:00:00",
                "cu_id": "WEB",
                "cu_account": "WEBSALES",
                "contact_id": 2,
                "contact_email": "webshop@acme.example",
                "contact_first_name": "Web",
                "contact_last_name": "Sales",
                "cu_name": "Web sales",
            },
        ],  # fmt: skip
        "11": [
            *order_rows(5001, "SO-5001", email="jo@example.com", cu_id="C100"),
            *order_rows(5002, "SO-5002", email="ann@example.com", cu_id="WEB"),
            *order_rows(5003, "SO-5003", email="bob@example.com", cu_id="WEB"),
        ],
        "12": [
            {
                "row_id": 700,
                "amended": "2026-05-27 15:00:00",
                "dh_number": "D1",
                "oh_order_number": "SO-5001",
                "oh_cust_order_ref": "#WEB5001",
                "dh_datetime": "2026-05-27 14:45:00",
                "courier_name": "DPD",
                "dh_consignment_number": "15501234",
                "cod_tracking_url_prefix": "https://track.dpd.co.uk/",
                "vad_variant_code": f"SKU-{n}",
                "dl_quantity": 1,
            }
            for n in range(2)
        ],  # fmt: skip
        "13": [
            {
                "row_id": 900,
                "amended": "2026-05-28 10:00:00",
                "cn_number": "CN-77",
                "oh_order_number": "SO-5001",
                "cn_datetime": "2026-05-28 09:30:00",
                "currency_code": "GBP",
                "cn_gross": -12.00,
                "cn_reason": "Damaged",
                "contact_email": "jo@example.com",
                "cu_id": "C100",
                "vad_variant_code": "SKU-1",
                "cnl_quantity": 1,
                "cnl_gross": 12.00,
            },
        ],  # fmt: skip
        "16": [
            {
                "row_id": 1,
                "amended": "2026-05-27 16:00:00",
                "vad_variant_code": "SKU-0",
                "location_code": "MAIN",
                "on_hand": 7,
                "allocated": 2,
                "free_stock": 5,
            },
            {
                "row_id": 2,
                "amended": "2026-05-27 16:00:00",
                "vad_variant_code": "SKU-1",
                "location_code": "MAIN",
                "on_hand": 1,
                "allocated": 1,
                "free_stock": 0,
            },
        ],  # fmt: skip
    }


@pytest.fixture
def fake() -> Iterator[FakeOrderwise]:
    _TOKENS.clear()
    server = FakeOrderwise(definitions=seeded()).start()
    yield server
    server.stop()
    _TOKENS.clear()


@pytest.fixture
def flow(engine: Engine, fake: FakeOrderwise) -> Flow:
    connection = make_connection(
        engine.workspace,
        "orderwise",
        name="OrderWise",
        options={
            "base_url": fake.url,
            "account": "acme",
            "page_size": 4,
            "lookback_minutes": 15,
            "export_definitions": DEFINITIONS,
            "status_map": STATUS_MAP,
            "shared_customer_ids": ["WEB"],
        },
        credentials={"username": fake.username, "password": fake.password},
    )
    flow = Flow.objects.create(
        workspace=engine.workspace,
        name="OrderWise → DotDigital",
        source=connection,
        destination=engine.destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
        masters_products=True,
    )
    install_defaults(flow)
    mark_backfill_complete(flow, by="test")
    return flow


def poll_round(flow: Flow) -> None:
    """One round over every export definition through the engine's own poller."""
    poll_flow(flow.pk, max_pages=50)
    flow.refresh_from_db()


def test_orderwise_rows_reach_dotdigital_as_contacts_orders_dispatch_refund_products_and_stock(
    engine: Engine, flow: Flow
):
    poll_round(flow)
    engine.pump()

    jo = engine.contact("jo@example.com")
    assert jo is not None
    assert jo["dataFields"]["FIRSTNAME"] == "Jo" and jo["dataFields"]["LASTNAME"] == "Bloggs"
    order = engine.records("jo@example.com")["SO-5001"]
    assert Decimal(str(order["GrandTotal"])) == Decimal("27.99")
    assert order["Status"] == "open" and order["Financial"] == "paid"
    assert [(p["Sku"], p["Qty"]) for p in order["Products"]] == [("SKU-0", 1), ("SKU-1", 1)]
    # The delivery: dispatched, with DPD and the consignment's tracking.
    assert order["Dispatched"] is True and order["Carrier"] == "DPD"
    assert order["FirstDispatchedAt"].startswith("2026-05-27T13:45")  # 14:45 BST
    # The credit note is a refund of 12.00: LTV 27.99 − 12.00, REFUNDED.
    assert order["Refunded"] is True and Decimal(str(order["RefundedTotal"])) == Decimal("12")
    assert Decimal(str(jo["dataFields"]["LTV"])) == Decimal("15.99")
    assert jo["dataFields"]["REFUNDED"] is True

    # Catalogue and stock, account-scoped.
    products = account_records(engine, "Products")
    assert products["SKU-0"]["Name"] == "Thing 0" and Decimal(str(products["SKU-0"]["Price"])) == 10
    stock = account_records(engine, "Stock")
    assert stock["SKU-0"]["Saleable"] == 5 and stock["SKU-0"]["InStock"] is True
    assert stock["SKU-1"]["Saleable"] == 0 and stock["SKU-1"]["InStock"] is False

    types = set(SourceEvent.objects.filter(flow=flow).values_list("event_type", flat=True))
    assert {"customer.upserted", "order.created", "order.status_changed", "shipment.dispatched",
            "refund.issued", "product.updated", "stock.changed"} <= types  # fmt: skip
    assert not SourceEvent.objects.filter(flow=flow).exclude(state="delivered").exists()


def test_web_orders_on_the_shared_account_are_guests_each_keyed_by_their_own_email(
    engine: Engine, flow: Flow
):
    poll_round(flow)
    engine.pump()

    emails = sorted(c["identifiers"]["email"] for c in engine.sandbox.state()["contacts"])
    # Two guests and Jo; the shared account's own contact is never a DotDigital contact.
    assert emails == ["ann@example.com", "bob@example.com", "jo@example.com"]
    ann, bob = engine.contact("ann@example.com"), engine.contact("bob@example.com")
    assert ann is not None and bob is not None
    assert ann["dataFields"]["ORDER_COUNT"] == 1 and bob["dataFields"]["ORDER_COUNT"] == 1
    assert set(engine.records("ann@example.com")) == {"SO-5002"}
    assert set(engine.records("bob@example.com")) == {"SO-5003"}
    assert ann["dataFields"]["FIRSTNAME"] == "Ann"


def test_a_status_change_is_delivered_and_an_unknown_status_changes_nothing_but_is_reported(
    engine: Engine, flow: Flow, fake: FakeOrderwise
):
    poll_round(flow)
    engine.pump()
    assert engine.records("jo@example.com")["SO-5001"]["Status"] == "open"

    # The order is completed in OrderWise, its delivery charge raised by 4.00: the next round
    # re-reads it (amended since the last round) as a status change and an amendment.
    fake.definitions["11"] = [
        {**row, "oh_gross": 31.99, "oh_delivery_gross": 7.99}
        for row in order_rows(5001, "SO-5001", email="jo@example.com", cu_id="C100",
                              status="Completed", amended="2026-05-29 09:00:00")
    ]  # fmt: skip
    poll_round(flow)
    engine.pump()
    record = engine.records("jo@example.com")["SO-5001"]
    assert record["Status"] == "closed" and record["Fulfilment"] == "dispatched"
    assert Decimal(str(record["GrandTotal"])) == Decimal("31.99")  # order.updated
    assert Decimal(str(record["Shipping"])) == Decimal("7.99")
    jo = engine.contact("jo@example.com")
    assert jo is not None
    assert Decimal(str(jo["dataFields"]["LTV"])) == Decimal("19.99")  # 31.99 − the 12.00 credit

    # A status the tenant's map does not know: no status event, DotDigital keeps "closed".
    fake.definitions["11"] = [
        {**row, "oh_gross": 31.99, "oh_delivery_gross": 7.99}
        for row in order_rows(5001, "SO-5001", email="jo@example.com", cu_id="C100",
                              status="Awaiting courier collection", amended="2026-05-29 10:00:00")
    ]  # fmt: skip
    statuses_before = SourceEvent.objects.filter(event_type="order.status_changed").count()
    poll_round(flow)
    engine.pump()

    assert SourceEvent.objects.filter(event_type="order.status_changed").count() == statuses_before
    record = engine.records("jo@example.com")["SO-5001"]
    assert record["Status"] == "closed" and record["Fulfilment"] == "dispatched"
    assert Decimal(str(record["GrandTotal"])) == Decimal("31.99")
    # …and the poller files it in the inbox, for the admins to add to the status map.
    occurrence = Occurrence.objects.get(group__kind="source_warning")
    assert occurrence.order_number == "SO-5001" and occurrence.group.team.slug == "admins"
    assert occurrence.message == (
        "OrderWise status 'Awaiting courier collection' is not in this connection's status map: "
        "nothing changed. Add it to the map."
    )
    # Polled again (the look-back re-reads it): the same occurrence, seen again; no new group.
    fake.definitions["11"][0]["amended"] = fake.definitions["11"][1]["amended"] = (
        "2026-05-29 10:05:00"
    )
    poll_round(flow)
    engine.pump()
    assert Occurrence.objects.filter(group__kind="source_warning").count() == 1
    assert ExceptionGroup.objects.filter(kind="source_warning").count() == 1


def account_records(engine: Engine, collection: str) -> dict[str, dict[str, Any]]:
    response = engine.sandbox.api.get(f"{engine.sandbox.url}/insightData/v3/account/{collection}")
    assert response.status_code == 200, response.text
    return {item["key"]: item["json"] for item in response.json()["_items"]}
