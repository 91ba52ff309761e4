"""Brightpearl over HTTP: fetching notified ids, polling, backfill, auth and the shared budget,
against a fake Brightpearl on 127.0.0.1 serving the recorded payloads."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.budget import DatabaseBackend, Lane, RateBudget
from connectors.models import Connection
from connectors.sources.brightpearl.adapter import BrightpearlAdapter, BrightpearlError
from connectors.sources.brightpearl.api import LIMIT, TIER
from tests.connectors.sources.fakes.brightpearl import FakeBrightpearl
from tests.factories import make_connection

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "brightpearl"
NOW = datetime(2026, 2, 11, 9, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeBrightpearl]:
    server = FakeBrightpearl()
    so = load("order-get-sales-order.json")["response"][0]
    server.orders[1] = so
    server.orders[2] = load("synthetic/order-get-sales-credit-paid.json")["response"][0]
    server.orders[312] = load("extra/order-get-purchase-order.json")["response"][0]
    for note_id, note in load("goods-out-note-get.json")["response"].items():
        server.notes[int(note_id)] = note
    product = load("extra/product-get.json")["response"][0]
    server.products[1007] = product
    server.products[1532] = {**copy.deepcopy(product), "id": 1532, "identity": {"sku": "SHIRT-B"}}
    for pid, entry in load("product-availability-get.json")["response"].items():
        server.availability[int(pid)] = entry
    contact = load("contact-get.json")["response"][0]
    server.contacts[151499] = contact
    server.statuses = load("extra/order-status-get.json")["response"] + [
        {"statusId": 4, "name": "Invoiced", "orderTypeCode": "SO"}
    ]
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def budget_key() -> str:
    return f"brightpearl:test-{uuid.uuid4()}"


@pytest.fixture
def adapter(clock: Clock, budget_key: str) -> BrightpearlAdapter:
    return BrightpearlAdapter(
        now=lambda: NOW,
        budget_factory=lambda _conn: RateBudget(
            budget_key, {TIER: LIMIT}, backend=DatabaseBackend(), clock=clock
        ),
        sleep=clock.sleep,
        max_wait=0.0,
    )


@pytest.fixture
def conn(world, fake: FakeBrightpearl) -> Connection:
    return make_connection(
        world.workspace,
        "brightpearl",
        options={
            "account_code": "acme",
            "base_url": f"{fake.url}/public-api/acme",
            "oauth_url": fake.url,
            "order_status_map": {"4": "closed"},
        },
        credentials={"app_ref": "syncdesk", "account_token": "private-token"},
    )


def note(resource: str, ids: str, raised_on: str = "2025-11-04T16:41:39.000Z") -> dict[str, Any]:
    return {
        "resource_type": resource,
        "id_set": ids,
        "raised_on": raised_on,
        "full_event": f"{resource}.modified",
    }


def budget(budget_key: str, clock: Clock) -> RateBudget:
    return RateBudget(budget_key, {TIER: LIMIT}, backend=DatabaseBackend(), clock=clock)


# -- fetching notified ids ------------------------------------------------------------------


def test_a_shipped_goods_out_note_is_fetched_with_the_private_app_headers(adapter, conn, fake):
    events = adapter.fetch(conn, note("goods-out-note", "12447605"))
    assert [e["event_type"] for e in events] == ["shipment.dispatched"]
    request = fake.api_requests()[0]
    assert (
        request.path == "/public-api/acme/warehouse-service/order/*/goods-note/goods-out/12447605"
    )
    assert request.headers["brightpearl-app-ref"] == "syncdesk"
    assert request.headers["brightpearl-account-token"] == "private-token"


def test_a_notified_order_is_fetched_and_becomes_order_events(adapter, conn, fake):
    events = adapter.fetch(conn, note("order", "1"))
    assert {e["event_type"] for e in events} == {
        "order.created",
        "order.updated",
        "order.status_changed",
    }


def test_an_id_set_is_fetched_in_chunks_of_at_most_200_orders(adapter, conn, fake):
    adapter.fetch(conn, note("order", "1-450"))
    paths = [r.path.rsplit("/", 1)[1] for r in fake.api_requests()]
    assert paths == ["1-200", "201-400", "401-450"]


def test_a_sales_credit_and_a_purchase_order_fetched_together(adapter, conn, fake):
    events = adapter.fetch(conn, note("order", "2,312"))
    assert [e["event_type"] for e in events] == ["refund.issued"]


def test_ids_that_no_longer_exist_give_no_events(adapter, conn, fake):
    assert adapter.fetch(conn, note("order", "999")) == []  # 200 {"response": []}, as recorded
    assert adapter.fetch(conn, note("contact", "1")) == []  # 404 CMNC-404, as recorded


def test_a_product_notification_fetches_the_product_and_its_availability(adapter, conn, fake):
    events = adapter.fetch(conn, note("product", "1007,1532", "2026-02-11T08:59:00Z"))
    kinds = sorted(e["event_type"] for e in events)
    assert kinds == ["product.updated", "product.updated", "stock.changed", "stock.changed"]
    stock = next(
        e for e in events if e["event_type"] == "stock.changed" and e["data"]["sku"] == "SHIRT-B"
    )
    assert stock["data"]["quantities"]["saleable"] == 48
    assert stock["data"]["as_of"] == "2026-02-11T08:59:00Z"
    assert [r.path.split("/")[-2] for r in fake.api_requests()] == [
        "product",
        "product-availability",
    ]


def test_a_contact_notification_gives_consent_once_and_then_only_on_change(adapter, conn, fake):
    first = adapter.fetch(conn, note("contact", "151499"))
    again = adapter.fetch(conn, note("contact", "151499"))
    fake.contacts[151499] = {
        **fake.contacts[151499],
        "marketingDetails": {"isReceiveEmailNewsletter": False},
        "updatedOn": "2025-09-02T10:00:00.000-06:00",
    }
    changed = adapter.fetch(conn, note("contact", "151499"))

    def consent(events: list[dict[str, Any]]) -> dict[str, Any]:
        return next(e for e in events if e["event_type"] == "consent.changed")

    assert consent(first)["data"]["status"] == "subscribed"
    assert consent(again)["source_event_id"] == consent(first)["source_event_id"]
    assert consent(changed)["data"]["status"] == "unsubscribed"
    assert consent(changed)["source_event_id"] != consent(first)["source_event_id"]


def test_an_unknown_resource_notification_fails_for_good(adapter, conn):
    with pytest.raises(BrightpearlError) as caught:
        adapter.fetch(conn, note("goods-in-note", "1"))
    assert caught.value.permanent


# -- the shared budget and Brightpearl's throttle -------------------------------------------


def test_each_call_takes_from_the_shared_budget_and_reads_the_throttle_headers(
    adapter, conn, fake, budget_key, clock
):
    fake.cap = 200
    fake.window = [0.0] * 0  # nothing sent yet
    adapter.fetch(conn, note("order", "1"))
    used, limit = budget(budget_key, clock).usage(TIER)
    assert (used, limit) == (1, 200)
    # Another client of the account spent most of the minute: Brightpearl's headers say so.
    fake.script["/public-api/acme/order-service/order/1"].append(
        (
            200,
            load("order-get-sales-order.json"),
            {"Brightpearl-Requests-Remaining": "5", "Brightpearl-Next-Throttle-Period": "23329"},
        )
    )
    adapter.fetch(conn, note("order", "1"))
    assert budget(budget_key, clock).usage(TIER)[0] >= 195


def test_a_503_over_the_cap_blocks_every_worker_until_the_next_period(
    adapter, conn, fake, budget_key, clock
):
    fake.script["/public-api/acme/order-service/order/1"].append(
        (
            503,
            load("error-503-request-cap.json"),
            {"Brightpearl-Requests-Remaining": "0", "Brightpearl-Next-Throttle-Period": "23329"},
        )
    )
    with pytest.raises(BrightpearlError) as caught:
        adapter.fetch(conn, note("order", "1"))
    assert not caught.value.permanent
    assert caught.value.retry_after == pytest.approx(23.329)
    assert "too many requests" in caught.value.message
    sent = len(fake.api_requests())
    with pytest.raises(BrightpearlError) as again:
        adapter.fetch(conn, note("order", "1"))
    assert len(fake.api_requests()) == sent  # refused by the budget, Brightpearl not called
    assert 0 < (again.value.retry_after or 0) <= 23.329
    clock.now += 24
    assert adapter.fetch(conn, note("order", "1"))


def test_the_remaining_header_stops_us_before_brightpearls_503(adapter, conn, fake):
    fake.cap = 2  # another client of the account has used all but two of this minute
    adapter.fetch(conn, note("order", "1"))
    adapter.fetch(conn, note("order", "1"))  # answered "Requests-Remaining: 0"
    with pytest.raises(BrightpearlError) as caught:
        adapter.fetch(conn, note("order", "1"))
    assert caught.value.status is None  # refused by the budget, not by Brightpearl
    assert caught.value.retry_after and not caught.value.permanent
    assert len(fake.api_requests()) == 2


def test_a_spent_budget_refuses_before_calling_brightpearl(adapter, conn, fake, budget_key, clock):
    shared = budget(budget_key, clock)
    assert shared.acquire(TIER, Lane.REALTIME, cost=200)
    with pytest.raises(BrightpearlError) as caught:
        adapter.fetch(conn, note("order", "1"))
    assert caught.value.retry_after and not caught.value.permanent
    assert fake.api_requests() == []


def test_a_short_wait_for_the_budget_is_slept_not_failed(conn, fake, budget_key, clock):
    patient = BrightpearlAdapter(
        now=lambda: NOW,
        budget_factory=lambda _c: budget(budget_key, clock),
        sleep=clock.sleep,
        max_wait=120.0,
    )
    assert budget(budget_key, clock).acquire(TIER, Lane.REALTIME, cost=200)
    assert patient.fetch(conn, note("order", "1"))
    assert clock.slept and sum(clock.slept) <= 60


def test_polling_keeps_a_reserve_of_the_minute_for_webhook_fetches(
    adapter, conn, fake, budget_key, clock
):
    assert budget(budget_key, clock).acquire(TIER, Lane.REALTIME, cost=160)
    with pytest.raises(BrightpearlError):
        adapter.poll(conn, "")  # the bulk lane stops a fifth short of the 200
    assert adapter.fetch(conn, note("order", "1"))  # the realtime lane still gets through


def test_a_5xx_is_retried_later_but_a_filter_brightpearl_cannot_parse_is_not(adapter, conn, fake):
    path = "/public-api/acme/order-service/order/1"
    fake.script[path].append((502, {"response": "Bad gateway"}, {}))
    with pytest.raises(BrightpearlError) as transient:
        adapter.fetch(conn, note("order", "1"))
    assert not transient.value.permanent and transient.value.status == 502
    fake.script["/public-api/acme/order-service/order-search"].append(
        (500, load("error-500-search-filter-not-parsed.json"), {})
    )
    with pytest.raises(BrightpearlError) as permanent:
        adapter.poll(conn, "")
    assert permanent.value.permanent
    assert "CMNC-018" in permanent.value.message


# -- auth -----------------------------------------------------------------------------------


def test_wrong_private_app_credentials_fail_for_good(adapter, conn, fake):
    conn.credentials = {"app_ref": "syncdesk", "account_token": "wrong"}
    with pytest.raises(BrightpearlError) as caught:
        adapter.fetch(conn, note("order", "1"))
    assert caught.value.permanent and caught.value.status == 401


def test_an_expired_oauth_token_is_refreshed_once_and_kept_encrypted(adapter, conn, fake):
    fake.access_token = "old-token"
    fake.expired_tokens.add("old-token")
    conn.credentials = {
        "app_ref": "syncdesk",
        "access_token": "old-token",
        "refresh_token": "refresh-1",
    }
    conn.save()
    events = adapter.fetch(conn, note("order", "1"))
    assert events
    conn.refresh_from_db()
    assert conn.credentials["access_token"] == fake.access_token != "old-token"
    assert conn.credentials["refresh_token"] == fake.refresh_token
    assert conn.credentials["api_domain"] == "ws-use.brightpearl.com"  # as recorded
    refresh = next(r for r in fake.received if r.path == "/token/acme")
    assert b"grant_type=refresh_token" in refresh.body
    api = fake.api_requests()
    assert api[0].headers["authorization"] == "Bearer old-token"
    assert api[-1].headers["authorization"] == f"Bearer {fake.access_token}"


def test_a_refused_refresh_fails_for_good_asking_to_reconnect(adapter, conn, fake):
    fake.access_token = "old-token"
    fake.expired_tokens.add("old-token")
    fake.refusing_refresh = True
    conn.credentials = {
        "app_ref": "syncdesk",
        "access_token": "old-token",
        "refresh_token": "refresh-1",
    }
    with pytest.raises(BrightpearlError) as caught:
        adapter.fetch(conn, note("order", "1"))
    assert caught.value.permanent
    assert "reconnect" in caught.value.message


# -- polling and backfill -------------------------------------------------------------------


def test_polling_pages_the_order_search_and_resumes_from_the_newest_update(adapter, conn, fake):
    for order_id in range(10, 15):
        fake.orders[order_id] = {
            **copy.deepcopy(fake.orders[1]),
            "id": order_id,
            "updatedOn": f"2026-02-0{order_id - 9}T10:00:00.000+00:00",
        }
    conn.options = {**conn.options, "page_size": 3}
    pages = [adapter.poll(conn, "")]
    while not pages[-1].reached_present and len(pages) < 5:
        pages.append(adapter.poll(conn, pages[-1].cursor))
    assert len(pages) == 3  # 8 orders, 3 a page
    events = [e for page in pages for e in page.events]
    second = pages[-1]
    order_ids = {e["data"]["order_key"] for e in events if e["event_type"] == "order.created"}
    assert order_ids == {f"brightpearl:acme:order:{i}" for i in (1, 10, 11, 12, 13, 14)}
    refunds = [e for e in events if e["event_type"] == "refund.issued"]
    assert len(refunds) == 1  # order 2, the paid credit; 312 (a PO) is never fetched
    fetched = [
        r.path.rsplit("/", 1)[1] for r in fake.api_requests() if "/order-service/order/" in r.path
    ]
    assert "312" not in ",".join(fetched)
    cursor = json.loads(second.cursor)
    assert cursor["since"] == "2026-02-05T09:55:00Z"  # newest update less five minutes
    third = adapter.poll(conn, second.cursor)
    search = [r for r in fake.api_requests() if r.path.endswith("order-search")][-1]
    assert search.query["updatedOn"] == "2026-02-05T09:55:00Z/"
    assert {e["data"]["order_key"] for e in third.events if e["event_type"] == "order.created"} == {
        "brightpearl:acme:order:14"
    }


def test_a_repeated_poll_gives_the_same_event_ids(adapter, conn, fake):
    first = adapter.poll(conn, "")
    again = adapter.poll(conn, "")
    assert [e["source_event_id"] for e in first.events] == [
        e["source_event_id"] for e in again.events
    ]


def test_backfill_searches_orders_by_creation_date(adapter, conn, fake):
    start, end = datetime(2020, 3, 1, tzinfo=UTC), datetime(2020, 4, 1, tzinfo=UTC)
    page = adapter.backfill(conn, start, end, "")
    assert page.reached_present
    assert {e["event_type"] for e in page.events} >= {"order.created"}
    search = next(r for r in fake.api_requests() if r.path.endswith("order-search"))
    assert search.query["createdOn"] == "2020-03-01T00:00:00Z/2020-04-01T00:00:00Z"


# -- admin ----------------------------------------------------------------------------------


def test_testing_the_connection_names_the_statuses_not_mapped_yet(adapter, conn, fake):
    line = adapter.test_connection(conn)
    assert "acme" in line
    assert "1 Draft / Quote" in line
    assert "4 Invoiced" not in line  # mapped to closed


def test_an_opt_out_made_in_dotdigital_is_written_back_to_the_contact(adapter, conn, fake):
    adapter.write_back_opt_out(conn, "test@gmail.com", NOW)
    patch = next(r for r in fake.api_requests() if r.method == "PATCH")
    assert patch.path.endswith("/contact-service/contact/151499")
    assert json.loads(patch.body) == [
        {"op": "replace", "path": "/marketingDetails/isReceiveEmailNewsletter", "value": False}
    ]
    assert fake.contacts[151499]["marketingDetails"]["isReceiveEmailNewsletter"] is False


def test_the_setup_page_says_which_webhooks_to_register_and_how(world):
    from django.test import Client

    client = Client()
    client.force_login(world.admin)
    page = client.get("/w/acme/config/connectors/brightpearl/setup/").content.decode()
    for needed in (
        "goods-out-note.modified.shipped",
        "qualityOfService",
        "idSetAccepted",
        "order_status_map",
        "account_token",
    ):
        assert needed in page


# -- through the engine's intake ------------------------------------------------------------


def test_a_webhook_is_answered_at_once_then_fetched_into_stored_events(conn, fake):
    """POST /hooks/<token>/ stores a notification (202), the engine's fetch turns it into events
    that pass the engine's own schema validation, and a second fetch stores nothing new."""
    from django.test import Client

    from monitoring.models import SourceEvent, SourceNotification
    from monitoring.pipeline.sources import fetch_one

    token = conn.rotate_webhook_token()
    body = load("synthetic/webhook-goods-out-note-shipped.json")
    response = Client().post(
        f"/hooks/{token}/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 202
    assert response.json()["notifications"] == 1
    notification = SourceNotification.objects.get(connection=conn)
    assert fetch_one(notification) == 1
    notification.refresh_from_db()
    assert notification.state == SourceNotification.State.DONE
    assert notification.events_count == 1 and not notification.error
    assert list(SourceEvent.objects.values_list("event_type", flat=True)) == ["shipment.dispatched"]
    again = SourceNotification.objects.create(
        workspace=conn.workspace, connection=conn, payload=notification.payload
    )
    fetch_one(again)
    again.refresh_from_db()
    assert again.events_count == 0  # the same shipment version: a duplicate
    assert SourceEvent.objects.count() == 1
