"""Stokly end to end: lists polled from a fake Stokly API by the engine's own poller (`poll_flow`),
staged and delivered to the DotDigital sandbox, read back through DotDigital's API.

The catalogue is Stokly's real listings page (payloads/stokly/listings-list-page.json); sale
orders, items, customers, invoices and inventory records are synthetic, in the field names of
public client code (sources.md §6). Covered: product.updated, customer.upserted, order.created,
order.status_changed (stage/item statuses, and a paid invoice), stock.changed, guests; and money
served as JSON floats arriving in DotDigital to the penny. No refund.issued: Stokly's public API
shows no credit or refund resource (connectors/sources/stokly/README.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.sources.stokly.api import _TOKENS
from exceptions_inbox.models import Occurrence
from monitoring.models import Flow, SourceEvent
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.pipeline.sources import poll_flow
from tests.connectors.sources.fakes.stokly import FakeStokly
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LISTINGS = json.loads(
    (
        Path(__file__).resolve().parent / "payloads" / "stokly" / "listings-list-page.json"
    ).read_text()
)["data"]
CHANNEL = LISTINGS[0]["channelId"]
KIT, DOOR, KINDLING = "TREKKER-KIT", "1GlassSide-Standard", "KINDLING10WAXLINGS2"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def sale_order(n: int, created: datetime, *, customer: dict[str, Any] | None, email: str,
               statuses: tuple[str, ...] = ("unprocessed",), paid: float) -> dict[str, Any]:  # fmt: skip
    return {
        "saleOrderId": f"so-{n}", "niceId": 1000 + n, "sourceReferenceId": f"#WEB{n}",
        "channelName": "Shopify", "stage": "order", "itemStatuses": list(statuses),
        "currency": "GBP", "createdAt": stamp(created), "customer": customer, "email": email,
        "shipping": {"name": {"forename": "Ann", "surname": "Guest"}, "option": "Tracked 24",
                     "cost": 3.99, "tax": 0.665},
        "payments": [{"method": "card", "amount": paid}],
    }  # fmt: skip


def item(line_id: str, sku: str, total: float, *, parent: str | None = None,
         quantity: int = 1) -> dict[str, Any]:  # fmt: skip
    money = {} if parent else {
        "displayPrice": total, "displayLinePrice": total, "displayLineDiscount": 0,
        "displayLineTax": round(total / 6, 4), "displayLineTotal": total,
    }  # fmt: skip
    return {"lineId": line_id, "parentId": parent, "itemSku": sku, "itemName": sku.title(),
            "quantity": quantity, "status": "unprocessed", "fulfilmentType": "delivery", **money}  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeStokly]:
    _TOKENS.clear()
    now = datetime.now(UTC).replace(microsecond=0)
    server = FakeStokly(clock=time.time)
    server.listings[CHANNEL] = LISTINGS
    server.customers = [
        {"customerId": "cu-1", "email": " Jo@Example.com ", "name": {"forename": "Jo", "surname": "Bloggs"},
         "status": 0, "updatedAt": stamp(now - timedelta(days=3)), "createdAt": stamp(now - timedelta(days=30))},
    ]  # fmt: skip
    # Jo's order: 19.99 + 0.10 + 0.30 + 3.99 delivery, binary floats that do not add up exactly
    # (as floats the sum is 24.380000000000003).
    server.saleorders = [
        sale_order(1, now - timedelta(hours=5), customer={"customerId": "cu-1", "email": "jo@example.com"},
                   email="jo@example.com", paid=24.38),
        sale_order(2, now - timedelta(hours=4), customer=None, email="Ann.Guest@Example.com", paid=33.32),
    ]  # fmt: skip
    server.items = {
        "so-1": [
            item("l1", KIT, 19.99),
            item("l1a", "KETTLE-SS", 0, parent="l1"),  # a kit component: quantity, no money
            item("l2", DOOR, 0.10),
            item("l3", KINDLING, 0.30),
        ],
        "so-2": [item("l4", KINDLING, 29.33)],
    }
    server.invoices = [
        {"invoiceId": "inv-1", "saleOrderId": "so-1", "saleOrderNiceId": 1001, "status": "paid",
         "issueDate": stamp(now - timedelta(hours=3))},
    ]  # fmt: skip
    server.inventory = [
        {"itemId": "i-kit", "itemSku": KIT, "binId": "b1", "locationName": "Leeds", "binName": "A1",
         "onHand": 4},
        {"itemId": "i-door", "itemSku": DOOR, "binId": "b2", "locationName": "Leeds", "binName": "A2",
         "onHand": 0},
    ]  # fmt: skip
    server.start()
    yield server
    server.stop()
    _TOKENS.clear()


@pytest.fixture
def flow(engine: Engine, fake: FakeStokly) -> Flow:
    connection = make_connection(
        engine.workspace,
        "stokly",
        name="Stokly",
        options={
            "base_url": fake.url,
            "page_size": 2,
            "listing_channel_id": CHANNEL,
            "status_map": {"item_statuses": {"dispatched": "dispatched"}},
        },
        credentials={
            "account_key": fake.account_key,
            "client_id": fake.client_id,
            "secret": fake.secret,
        },
    )
    flow = Flow.objects.create(
        workspace=engine.workspace,
        name="Stokly → DotDigital",
        source=connection,
        destination=engine.destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
        masters_products=True,
    )
    install_defaults(flow)
    mark_backfill_complete(flow, by="test")
    return flow


def account_records(engine: Engine, collection: str) -> dict[str, dict[str, Any]]:
    response = engine.sandbox.api.get(f"{engine.sandbox.url}/insightData/v3/account/{collection}")
    assert response.status_code == 200, response.text
    return {item["key"]: item["json"] for item in response.json()["_items"]}


def test_stokly_lists_reach_dotdigital_with_float_money_exact_to_the_penny(
    engine: Engine, flow: Flow
):
    poll_flow(flow.pk, max_pages=50)
    engine.pump()

    jo = engine.contact("jo@example.com")
    assert jo is not None and jo["dataFields"]["FIRSTNAME"] == "Jo"
    order = engine.records("jo@example.com")["1001"]
    assert 19.99 + 0.10 + 0.30 + 3.99 != 24.38  # what a float sum would have sent
    assert Decimal(str(order["GrandTotal"])) == Decimal("24.38")
    assert Decimal(str(order["Subtotal"])) == Decimal("20.39")
    assert Decimal(str(order["Shipping"])) == Decimal("3.99")
    assert Decimal(str(jo["dataFields"]["LTV"])) == Decimal("24.38")
    assert [(p["Sku"], p["Qty"]) for p in order["Products"]] == [
        (KIT, 1),
        ("KETTLE-SS", 1),
        (DOOR, 1),
        (KINDLING, 1),
    ]
    assert Decimal(str(order["Products"][2]["LineTotal"])) == Decimal("0.1")
    # The paid invoice: financial status paid; stage "order" with unprocessed items: open.
    assert order["Status"] == "open" and order["Fulfilment"] == "unfulfilled"
    assert order["Financial"] == "paid"

    # A guest order (no Stokly customer): a contact keyed by its own email.
    ann = engine.contact("ann.guest@example.com")
    assert ann is not None and ann["dataFields"]["ORDER_COUNT"] == 1
    assert Decimal(str(engine.records("ann.guest@example.com")["1002"]["GrandTotal"])) == Decimal(
        "33.32"
    )

    # The catalogue from the real listings, and stock per SKU.
    products = account_records(engine, "Products")
    assert {KIT, DOOR, KINDLING} <= set(products)
    assert products[KIT]["Name"] == LISTINGS[0]["name"]
    stock = account_records(engine, "Stock")
    assert stock[KIT]["InStock"] is True and stock[DOOR]["InStock"] is False

    types = set(SourceEvent.objects.filter(flow=flow).values_list("event_type", flat=True))
    assert {"product.updated", "customer.upserted", "order.created", "order.status_changed",
            "stock.changed"} <= types  # fmt: skip
    assert not SourceEvent.objects.filter(flow=flow).exclude(state="delivered").exists()


def test_a_stokly_dispatch_status_is_delivered_and_an_unknown_one_changes_nothing(
    engine: Engine, flow: Flow, fake: FakeStokly
):
    poll_flow(flow.pk, max_pages=50)
    engine.pump()
    assert engine.records("jo@example.com")["1001"]["Fulfilment"] == "unfulfilled"

    fake.saleorders[0]["itemStatuses"] = ["dispatched"]
    flow.refresh_from_db()
    poll_flow(flow.pk, max_pages=50)
    engine.pump()
    assert engine.records("jo@example.com")["1001"]["Fulfilment"] == "dispatched"

    fake.saleorders[0]["itemStatuses"] = ["teleported"]
    before = SourceEvent.objects.filter(event_type="order.status_changed").count()
    flow.refresh_from_db()
    poll_flow(flow.pk, max_pages=50)
    engine.pump()
    record = engine.records("jo@example.com")["1001"]
    assert record["Fulfilment"] == "dispatched" and record["Status"] == "open"
    # The stage is still known, so a status event comes, but it carries no fulfilment.
    latest = SourceEvent.objects.filter(event_type="order.status_changed").order_by("-pk").first()
    assert latest is not None and "fulfilment" not in latest.data["to"]
    assert SourceEvent.objects.filter(event_type="order.status_changed").count() == before + 1
    occurrence = Occurrence.objects.get(group__kind="source_warning")
    assert occurrence.order_number == "1001"
    assert "'teleported'" in occurrence.message
