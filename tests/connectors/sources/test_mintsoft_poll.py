"""Mintsoft over HTTP: the poller (orders, returns, stock), keys and errors, against a fake
Mintsoft on 127.0.0.1 serving the recorded payloads."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.models import Connection
from connectors.sources.mintsoft.adapter import MintsoftAdapter, MintsoftError
from tests.connectors.sources.fakes.mintsoft import FakeMintsoft
from tests.factories import make_connection

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "mintsoft"
NOW = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def fake() -> Iterator[FakeMintsoft]:
    server = FakeMintsoft()
    server.orders = [*load("order-list-response.json"), load("synthetic/callback-despatched.json")]
    server.orders[2] = {**server.orders[2], "ID": 1918, "OrderNumber": "TEST CLIENT-1917"}
    returns = load("synthetic/return-search-by-date.json")
    server.returns_by_date = {"2026-02-10": returns}
    server.stock = {"3": load("products-in-location-report.json")}
    server.start()
    yield server
    server.stop()


@pytest.fixture
def adapter() -> MintsoftAdapter:
    return MintsoftAdapter(now=lambda: NOW)


@pytest.fixture
def conn(world, fake: FakeMintsoft) -> Connection:
    return make_connection(
        world.workspace,
        "mintsoft",
        options={
            "base_url": fake.url,
            "client_id": 3,
            "warehouse_ids": [3],
            "returns_lookback_days": 1,
            "page_size": 2,
        },
        credentials={"api_key": fake.static_key},
    )


def cycle(
    adapter: MintsoftAdapter, conn: Connection, cursor: str = ""
) -> tuple[list[dict[str, Any]], str, int]:
    """Poll until the cycle reaches the present: (events, cursor, polls)."""
    events: list[dict[str, Any]] = []
    for polls in range(1, 20):
        page = adapter.poll(conn, cursor)
        events += page.events
        cursor = page.cursor
        if page.reached_present:
            return events, cursor, polls
    raise AssertionError("the poller never reached the present")


def types(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event["event_type"]] = counts.get(event["event_type"], 0) + 1
    return counts


def test_a_poll_cycle_pages_orders_then_returns_then_stock_and_reaches_the_present(
    adapter, conn, fake
):
    events, cursor, polls = cycle(adapter, conn)
    # orders: 3 in pages of 2 (2 polls); returns: yesterday and today (2 polls); stock: 1 warehouse
    assert polls == 5
    assert types(events) == {
        "order.created": 3,
        "order.status_changed": 3,
        "shipment.dispatched": 1,
        "return.received": 1,
        "stock.changed": 6,  # six SKUs in the one warehouse
    }
    pages = [r.query["PageNo"] for r in fake.requests_to("/api/Order/List")]
    assert pages == ["1", "2"]
    assert all(r.headers["ms-apikey"] == fake.static_key for r in fake.received)
    assert all("apikey" not in {k.lower() for k in r.query} for r in fake.received)
    assert [r.query["Date"] for r in fake.requests_to("/api/Return/SearchByDate")] == [
        "2026-02-09",
        "2026-02-10",
    ]


def test_the_next_cycle_asks_only_for_orders_updated_since_the_newest_less_a_margin(
    adapter, conn, fake
):
    _, cursor, _ = cycle(adapter, conn)
    assert json.loads(cursor)["orders"]["since"] == "2026-02-09T14:36:29"  # 14:41:29.09 − 5 min
    events, _, _ = cycle(adapter, conn, cursor)
    since = fake.requests_to("/api/Order/List")[-1].query["SinceLastUpdated"]
    assert since == "2026-02-09T14:36:29"
    # Order 2207 is read again (inside the margin): the same ids, dropped by the engine.
    assert types(events).get("order.created") == 1


def test_unchanged_stock_is_not_sent_again_and_a_sku_that_disappears_goes_to_zero(
    adapter, conn, fake
):
    first, cursor, _ = cycle(adapter, conn)
    fake.stock["3"] = [row for row in fake.stock["3"] if row["ProductSKU"] != "TESTSKU"]
    second, _, _ = cycle(adapter, conn, cursor)
    stock = [e for e in second if e["event_type"] == "stock.changed"]
    assert [(e["data"]["sku"], e["data"]["quantities"]["on_hand"]) for e in stock] == [
        ("TESTSKU", 0)
    ]


def test_stock_going_back_to_a_level_seen_before_is_a_new_event(conn, fake):
    ticks = iter(range(1000))
    adapter = MintsoftAdapter(now=lambda: NOW.replace(minute=next(ticks) % 60))
    full = copy.deepcopy(fake.stock["3"])
    first, cursor, _ = cycle(adapter, conn)
    fake.stock["3"] = [row for row in full if row["ProductSKU"] != "TESTSKU"]
    _, cursor, _ = cycle(adapter, conn, cursor)
    fake.stock["3"] = full
    third, _, _ = cycle(adapter, conn, cursor)
    again = [e for e in third if e["event_type"] == "stock.changed"]
    before = next(
        e for e in first if e["event_type"] == "stock.changed" and e["data"]["sku"] == "TESTSKU"
    )
    assert [e["data"]["sku"] for e in again] == ["TESTSKU"]
    assert again[0]["source_event_id"] != before["source_event_id"]


def test_a_session_key_from_username_and_password_is_renewed_when_mintsoft_expires_it(
    adapter, conn, fake
):
    conn.credentials = {"username": fake.username, "password": fake.password}
    conn.save()
    adapter.poll(conn, "")
    conn.refresh_from_db()
    key = conn.credentials["session_key"]
    assert key in fake.keys
    fake.expire_session_keys()  # the 24 hours are up
    adapter.poll(conn, "")
    conn.refresh_from_db()
    assert conn.credentials["session_key"] != key
    assert len(fake.requests_to("/api/Auth")) == 2
    assert (
        fake.requests_to("/api/Order/List")[-1].headers["ms-apikey"]
        == conn.credentials["session_key"]
    )


def test_a_refused_static_key_fails_for_good(adapter, conn, fake):
    conn.credentials = {"api_key": "revoked"}
    with pytest.raises(MintsoftError) as caught:
        adapter.poll(conn, "")
    assert caught.value.permanent and caught.value.status == 401


def test_wrong_username_and_password_fail_for_good(adapter, conn, fake):
    conn.credentials = {"username": fake.username, "password": "wrong"}
    with pytest.raises(MintsoftError) as caught:
        adapter.poll(conn, "")
    assert caught.value.permanent


def test_a_429_is_retried_later_after_mintsofts_retry_after(adapter, conn, fake):
    fake.script["/api/Order/List"].append(
        (429, {"Message": "Too many requests"}, {"Retry-After": "30"})
    )
    with pytest.raises(MintsoftError) as caught:
        adapter.poll(conn, "")
    assert not caught.value.permanent and caught.value.retry_after == 30


def test_a_5xx_is_retried_later_and_the_cursor_does_not_move(adapter, conn, fake):
    fake.script["/api/Order/List"].append((500, {"Message": "An error has occurred."}, {}))
    with pytest.raises(MintsoftError) as caught:
        adapter.poll(conn, "")
    assert not caught.value.permanent and caught.value.status == 500
    page = adapter.poll(conn, "")  # the engine keeps the old cursor: the same page again
    assert json.loads(page.cursor)["orders"]["page"] == 2


def test_backfill_pages_orders_placed_in_the_range(adapter, conn, fake):
    start, end = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 9, tzinfo=UTC)
    first = adapter.backfill(conn, start, end, "")
    assert fake.requests_to("/api/Order/List")[0].query["SinceDate"] == "2026-02-01T00:00:00"
    pages = [first]
    while not pages[-1].reached_present:
        pages.append(adapter.backfill(conn, start, end, pages[-1].cursor))
    created = [e for p in pages for e in p.events if e["event_type"] == "order.created"]
    # 2207 was placed on 9 February, at or after the end: left out
    assert {e["data"]["order_number"] for e in created} == {
        "TEST CLIENT-1917-Copy-Copy",
        "TEST CLIENT-1917",
    }


def test_testing_the_connection_reads_the_status_list(adapter, conn, fake):
    assert adapter.test_connection(conn) == "Connected to Mintsoft: 23 order statuses."


def test_the_setup_page_gives_each_callback_its_url(world):
    from django.test import Client

    client = Client()
    client.force_login(world.admin)
    page = client.get("/w/acme/config/connectors/mintsoft/setup/").content.decode()
    for name in ("despatched", "cancelled", "delivered", "split"):
        assert f"?callback={name}" in page
    assert "ms-apikey" in page and "ExtraCode3" in page


def test_a_callback_through_the_engines_intake_stores_valid_events(conn):
    from django.test import Client

    from monitoring.models import SourceEvent

    token = conn.rotate_webhook_token()
    body = json.dumps(load("synthetic/callback-delivered.json"))
    response = Client().post(
        f"/hooks/{token}/",
        data=body,
        content_type="application/json",
        HTTP_X_MINTSOFT_CALLBACK="delivered",
    )
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 3
    assert set(SourceEvent.objects.values_list("event_type", flat=True)) == {
        "order.created",
        "shipment.dispatched",
        "shipment.carrier_scanned",
    }
    again = Client().post(
        f"/hooks/{token}/",
        data=body,
        content_type="application/json",
        HTTP_X_MINTSOFT_CALLBACK="delivered",
    )
    assert again.json()["duplicates"] == 3
