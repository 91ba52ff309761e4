"""Brightpearl end to end: its id-only webhooks POSTed to the public webhook, the records fetched
from a fake Brightpearl (recorded payloads) within the shared budget, staged and delivered, and
DotDigital's final state (the sandbox process) read back through DotDigital's API."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Workspace
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Flow, SourceEvent, SourceNotification
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.pipeline.sources import run_fetch
from tests.connectors.sources.fakes.brightpearl import FakeBrightpearl, load
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ORDER = load("order-get-sales-order.json")["response"][0]  # id 1, demo@test.com, SKU TEST001
CREDIT = load("synthetic/order-get-sales-credit-paid.json")["response"][0]  # id 2, of order 1
NOTE_ID, NOTE = next(iter(load("goods-out-note-get.json")["response"].items()))
CONTACT = load("contact-get.json")["response"][0]  # 151499, test@gmail.com, newsletter ticked
PRODUCT = load("extra/product-get.json")["response"][0]  # 1007, TEST001
AVAILABILITY = load("product-availability-get.json")["response"]
WEBHOOK = load("synthetic/webhook-order-modified.json")  # the registered bodyTemplate, filled in


@pytest.fixture
def fake() -> Iterator[FakeBrightpearl]:
    server = FakeBrightpearl()
    server.statuses = load("extra/order-status-get.json")["response"]
    server.orders = {1: copy.deepcopy(ORDER), 2: copy.deepcopy(CREDIT)}
    # The recorded note belongs to an order nobody recorded: here it is order 1's.
    server.notes = {int(NOTE_ID): {**copy.deepcopy(NOTE), "orderId": 1}}
    server.contacts = {151499: copy.deepcopy(CONTACT)}
    server.products = {1007: copy.deepcopy(PRODUCT)}
    server.availability = {1007: copy.deepcopy(AVAILABILITY["1007"])}
    server.start()
    yield server
    server.stop()


class Shop:
    """The engine's workspace with a Brightpearl connection and flow, and its webhook."""

    def __init__(self, engine: Engine, fake: FakeBrightpearl) -> None:
        self.engine = engine
        self.fake = fake
        # The recorded account trades in US dollars.
        Workspace.objects.filter(pk=engine.workspace.pk).update(currency="USD")
        engine.workspace.currency = "USD"
        self.connection = make_connection(
            engine.workspace,
            "brightpearl",
            name="Brightpearl",
            options={
                "account_code": "acme",
                "base_url": f"{fake.url}/public-api/acme",
                "order_status_map": {"4": "closed", "1": "open"},
            },
            credentials={"app_ref": "syncdesk", "account_token": "private-token"},
        )
        self.token = self.connection.rotate_webhook_token()
        # Brightpearl is this workspace's catalogue (the engine's demo ERP is not).
        Flow.objects.filter(pk=engine.erp_flow.pk).update(masters_products=False)
        self.flow = Flow.objects.create(
            workspace=engine.workspace,
            name="Brightpearl → DotDigital",
            source=self.connection,
            destination=engine.destination,
            join_key=Flow.JoinKey.ORDER_NUMBER,
            masters_products=True,
        )
        install_defaults(self.flow)
        mark_backfill_complete(self.flow, by="test")

    def notify(self, resource: str, ids: str, full_event: str) -> dict[str, Any]:
        """Brightpearl's webhook: ids only, answered 202 at once."""
        body = {**WEBHOOK, "resourceType": resource, "id": ids, "fullEvent": full_event}
        response = self.engine.web.post(
            f"/hooks/{self.token}/", data=json.dumps(body), content_type="application/json"
        )
        assert response.status_code == 202, response.content
        answer: dict[str, Any] = response.json()
        assert answer["notifications"] == 1
        return answer

    def settle(self) -> None:
        """Fetch what was notified (the fetch task's body), then run the engine to rest."""
        run_fetch()
        assert not SourceNotification.objects.exclude(state="done").exists(), list(
            SourceNotification.objects.values_list("state", "error")
        )
        self.engine.pump()

    def record(self, collection: str, key: str) -> dict[str, Any] | None:
        sandbox = self.engine.sandbox
        response = sandbox.api.get(f"{sandbox.url}/insightData/v3/account/{collection}/{key}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["json"]
        return found


@pytest.fixture
def shop(engine: Engine, fake: FakeBrightpearl) -> Shop:
    return Shop(engine, fake)


def delivered(event_type: str) -> list[SourceEvent]:
    return list(SourceEvent.objects.filter(event_type=event_type, state="delivered"))


def test_a_contact_notification_becomes_a_dotdigital_contact_subscribed_to_the_newsletter(
    shop: Shop,
):
    shop.notify("contact", "151499", "contact.modified")
    shop.settle()

    contact = shop.engine.contact("test@gmail.com")
    assert contact is not None
    assert contact["dataFields"]["FIRSTNAME"] == "john"
    assert contact["channelProperties"]["email"]["status"] == "subscribed"
    assert [e.event_type for e in SourceEvent.objects.order_by("event_type")] == [
        "consent.changed",
        "customer.upserted",
    ]
    assert all(e.state == "delivered" for e in SourceEvent.objects.all())


def test_unticking_the_newsletter_box_in_brightpearl_unsubscribes_the_contact(shop: Shop):
    shop.notify("contact", "151499", "contact.modified")
    shop.settle()
    unticked = shop.fake.contacts[151499]
    unticked["marketingDetails"]["isReceiveEmailNewsletter"] = False
    unticked["updatedOn"] = "2030-01-01T10:00:00.000Z"

    shop.notify("contact", "151499", "contact.modified")
    shop.settle()

    contact = shop.engine.contact("test@gmail.com")
    assert contact is not None
    assert contact["channelProperties"]["email"]["status"] == "unsubscribed"
    assert len(delivered("consent.changed")) == 2


def test_a_sale_its_status_change_its_shipment_and_its_credit_end_in_one_order_record(
    shop: Shop,
):
    email = "demo@test.com"
    shop.fake.orders[1]["orderStatus"] = {"orderStatusId": 1, "name": "Draft / Quote"}
    shop.notify("order", "1", "order.created")
    shop.settle()

    record = shop.engine.records(email)["1"]
    assert (record["GrandTotal"], record["Status"], record["Currency"]) == (10, "open", "USD")
    assert record["Products"][0]["Sku"] == "TEST001"
    assert "Dispatched" not in record or record["Dispatched"] is False

    # Invoiced (status 4, mapped to closed) later in Brightpearl.
    shop.fake.orders[1]["orderStatus"] = {"orderStatusId": 4, "name": "Invoiced"}
    shop.fake.orders[1]["updatedOn"] = "2030-01-01T10:00:00.000+00:00"
    shop.notify("order", "1", "order.modified.order-status")
    shop.settle()
    assert shop.engine.records(email)["1"]["Status"] == "closed"
    assert delivered("order.status_changed")

    shop.notify("goods-out-note", NOTE_ID, "goods-out-note.modified.shipped")
    shop.notify("sales-credit", "2", "sales-credit.created")
    shop.settle()

    record = shop.engine.records(email)["1"]
    assert record["Dispatched"] is True
    assert record["FirstDispatchedAt"].startswith("2025-11-04T16:41:38")  # -06:00 made UTC
    assert (record["RefundedTotal"], record["Refunded"]) == (10, True)
    assert len(shop.engine.records(email)) == 1
    contact = shop.engine.contact(email)
    assert contact is not None
    assert (contact["dataFields"]["ORDER_COUNT"], contact["dataFields"]["LTV"]) == (1, 0)
    for event_type in ("order.created", "shipment.dispatched", "refund.issued"):
        assert delivered(event_type), event_type


def test_a_product_notification_writes_the_catalogue_record_and_its_saleable_stock(shop: Shop):
    shop.notify("product", "1007", "product.modified.on-hand-modified")
    shop.settle()

    product = shop.record("Products", "TEST001")
    assert product is not None
    assert product["Sku"] == "TEST001"
    stock = shop.record("Stock", "TEST001")
    assert stock is not None
    assert stock["InStock"] is True
    assert stock["Saleable"] == AVAILABILITY["1007"]["total"]["onHand"]
    assert delivered("product.updated") and delivered("stock.changed")


def test_a_503_over_brightpearls_cap_stops_every_fetch_of_the_account_until_the_next_period(
    shop: Shop,
):
    # A frozen clock a minute back, so what is fetched is due when the clock runs again.
    with time_machine.travel(datetime.now(UTC) - timedelta(minutes=1), tick=False) as traveller:
        shop.fake.script["/public-api/acme/order-service/order/1"].append(
            (
                503,
                load("error-503-request-cap.json"),
                {
                    "Brightpearl-Requests-Remaining": "0",
                    "Brightpearl-Next-Throttle-Period": "23329",
                },
            )
        )
        shop.notify("order", "1", "order.created")
        run_fetch()
        order_note = SourceNotification.objects.get()
        assert order_note.state == "pending"  # to fetch again, not failed
        assert "503" in order_note.error
        assert len(shop.fake.api_requests()) == 1

        # Another notification of the account, due at once: the shared budget refuses it
        # before Brightpearl is called.
        shop.notify("contact", "151499", "contact.modified")
        run_fetch()
        assert len(shop.fake.api_requests()) == 1
        assert set(SourceNotification.objects.values_list("state", flat=True)) == {"pending"}
        contact_note = SourceNotification.objects.exclude(pk=order_note.pk).get()
        assert "budget is spent" in contact_note.error

        # Brightpearl's next period: both are fetched (the sweeper wakes them when due).
        traveller.shift(24)
        SourceNotification.objects.update(next_attempt_at=timezone.now())
        run_fetch()
        assert set(SourceNotification.objects.values_list("state", flat=True)) == {"done"}
        assert len(shop.fake.api_requests()) == 3

    shop.engine.pump()
    assert shop.engine.records("demo@test.com")["1"]["GrandTotal"] == 10
    assert shop.engine.contact("test@gmail.com") is not None


def test_a_fetched_order_in_a_status_missing_from_the_map_opens_a_source_warning(shop: Shop):
    shop.fake.orders[1]["orderStatus"] = {"orderStatusId": 9, "name": "On hold - stock"}
    shop.notify("order", "1", "order.created")
    shop.settle()

    (group,) = ExceptionGroup.objects.filter(kind="source_warning")
    assert group.subject_label.startswith("Brightpearl status 9:On hold - stock is not in")
    assert group.flow_key == shop.flow.key
    assert Occurrence.objects.get(group=group).order_number == "1"
    # The order itself still goes through, its lifecycle unchanged by the unknown status.
    assert shop.engine.records("demo@test.com")["1"]["GrandTotal"] == 10
