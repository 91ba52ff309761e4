"""Stokly: the signed grant and token refresh, polling its lists into canonical events.

Listings are real captures (payloads/stokly, see the payloads README); no sale order, customer,
invoice or inventory record is public, so those are synthetic, built from the field names public
client code uses (sources.md §6).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.models import Connection
from connectors.sources.base import SourceError
from connectors.sources.registry import get_adapter
from connectors.sources.stokly.adapter import StoklyAdapter
from connectors.sources.stokly.api import _TOKENS, RateLimited, filter_literal
from connectors.sources.values import money
from tests.connectors.sources.fakes.stokly import FakeStokly
from tests.factories import make_connection, make_workspace

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "stokly"
SCHEMA = (
    Path(__file__).resolve().parents[3] / "monitoring" / "schemas" / "canonical-event.schema.json"
)
START = 1_780_000_000.0  # 2026-05-28


def schema_errors(event: dict[str, Any]) -> list[str]:
    if not SCHEMA.exists():
        return []
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def order(
    n: int,
    *,
    created: str,
    stage: str = "order",
    statuses: tuple[str, ...] = ("unprocessed",),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "saleOrderId": f"so-{n}",
        "niceId": 1000 + n,
        "sourceReferenceId": f"#WEB{n}",
        "channelName": "Shopify",
        "stage": stage,
        "itemStatuses": list(statuses),
        "currency": "GBP",
        "createdAt": created,
        "customer": {"customerId": f"cu-{n}", "email": f" Jo.{n}@Example.com "},
        "shipping": {
            "name": {"forename": "Jo", "surname": "Bloggs"},
            "option": "Tracked 24",
            "cost": 3.99,
            "tax": 0.665,
        },
        "payments": [{"method": "card", "amount": 23.98}],
        **extra,
    }


def line(line_id: str, sku: str, total: float, **extra: Any) -> dict[str, Any]:
    return {
        "lineId": line_id,
        "parentId": None,
        "itemSku": sku,
        "itemName": sku.title(),
        "quantity": 1,
        "displayPrice": total,
        "displayLinePrice": total,
        "displayLineDiscount": 0,
        "displayLineTax": round(total / 6, 4),
        "displayLineTotal": total,
        "status": "unprocessed",
        "fulfilmentType": "delivery",
        **extra,
    }


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Any:
    _TOKENS.clear()
    yield
    _TOKENS.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Any:
    server = FakeStokly(clock=clock).start()
    yield server
    server.stop()


@pytest.fixture
def connection(db: Any, fake: FakeStokly) -> Connection:
    return make_connection(
        make_workspace("stk"),
        "stokly",
        options={"base_url": fake.url, "page_size": 2, "lookback_minutes": 10},
        credentials={
            "account_key": fake.account_key,
            "client_id": fake.client_id,
            "secret": fake.secret,
        },
    )


@pytest.fixture
def adapter(clock: Clock) -> StoklyAdapter:
    instance = StoklyAdapter()
    instance.clock = clock
    return instance


def poll_round(
    adapter: StoklyAdapter, connection: Connection, cursor: str = ""
) -> tuple[list[dict[str, Any]], list[dict[str, str]], str]:
    events: list[dict[str, Any]] = []
    warnings: list[dict[str, str]] = []
    for _ in range(100):
        page = adapter.poll(connection, cursor)
        events.extend(page.events)
        warnings.extend(getattr(page, "warnings", []))
        cursor = page.cursor
        if page.reached_present:
            return events, warnings, cursor
    raise AssertionError("the poller never reached the present")


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """The events of a type as the engine stores them: once per source_event_id."""
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["event_type"] == event_type:
            unique.setdefault(event["source_event_id"], event)
    return list(unique.values())


def test_stokly_is_registered_as_a_poller() -> None:
    assert isinstance(get_adapter("stokly"), StoklyAdapter)
    assert StoklyAdapter.can_poll


# -- auth --------------------------------------------------------------------------------------


def test_the_grant_is_signed_with_hmac_of_the_client_id_and_its_token_reused(
    adapter, connection, fake
):
    poll_round(adapter, connection)
    poll_round(adapter, connection)
    assert fake.grants == 1
    assert len(fake.calls("/v1/grant")) == 1


def test_a_token_is_renewed_a_minute_before_it_expires(adapter, connection, fake, clock):
    poll_round(adapter, connection)
    clock.now += fake.token_ttl - 30
    poll_round(adapter, connection)
    assert fake.grants == 2


def test_a_token_the_server_says_expired_is_granted_again_once_and_the_call_retried(
    adapter, connection, fake
):
    fake.saleorders = [order(1, created="2026-05-27T10:00:00.000Z")]
    poll_round(adapter, connection)
    fake.expire_tokens()
    events, _, _ = poll_round(adapter, connection)
    assert fake.grants == 2
    assert of_type(events, "order.created")


def test_a_wrong_secret_is_a_permanent_error(adapter, connection):
    connection.credentials = {**connection.credentials, "secret": "wrong"}
    with pytest.raises(SourceError) as caught:
        adapter.poll(connection, "")
    assert caught.value.permanent
    assert "wrong" not in caught.value.message


def test_an_expired_pasted_token_asks_for_a_new_one(adapter, connection, fake):
    fake.tokens["pasted"] = False
    connection.credentials = {"access_token": "pasted"}
    with pytest.raises(SourceError) as caught:
        adapter.poll(connection, "")
    assert caught.value.permanent
    assert "paste a new one" in caught.value.message


def test_testing_the_connection_reads_one_item(adapter, connection):
    assert "Connected to Stokly" in adapter.test_connection(connection)


# -- sale orders -------------------------------------------------------------------------------


@pytest.fixture
def kit_order(fake: FakeStokly) -> dict[str, Any]:
    sale = order(1, created="2026-05-27T10:00:00.000Z")
    fake.saleorders = [sale]
    fake.items["so-1"] = [
        line("l1", "MUG-RED", 0.1 + 0.2),  # a float artefact: 0.30000000000000004
        line("l2", "GIFT-KIT", 19.99),
        line("l3", "KIT-PART-A", 5.0, parentId="l2", quantity=2),
    ]
    return sale


def test_an_order_becomes_order_created_with_decimal_money_and_kit_components(
    adapter, connection, kit_order
):
    events, _, _ = poll_round(adapter, connection)
    [created] = of_type(events, "order.created")
    assert schema_errors(created) == []
    data = created["data"]
    assert data["order_number"] == "1001"
    assert data["channel_order_ref"] == "#WEB1"
    assert created["links"]["channel_order_ref"] == "#WEB1"
    mug, kit, part = data["lines"]
    assert mug["line_total"] == {"amount": "0.3000", "currency": "GBP"}  # never a float
    assert kit["unit_price"] == {"amount": "19.99", "currency": "GBP"}
    assert part["parent_line_key"] == "l2" and part["is_component"] is True
    assert "line_total" not in part  # revenue stays on the parent line
    assert part["quantity"] == 2
    assert data["totals"]["subtotal"] == {"amount": "20.2900", "currency": "GBP"}
    assert data["totals"]["grand_total"] == {"amount": "24.2800", "currency": "GBP"}
    assert data["shipping"]["tax"] == {"amount": "0.665", "currency": "GBP"}


def test_money_is_read_as_decimal_at_the_edge() -> None:
    assert money(Decimal("12.5"), "GBP") == {"amount": "12.50", "currency": "GBP"}
    assert money(Decimal("0.30000000000000004"), "GBP") == {"amount": "0.3000", "currency": "GBP"}
    assert money(7, "GBP") == {"amount": "7.00", "currency": "GBP"}
    assert money(None, "GBP") is None


def test_totals_that_do_not_match_the_payments_are_flagged_not_fixed(
    adapter, connection, kit_order
):
    events, _, _ = poll_round(adapter, connection)
    [created] = of_type(events, "order.created")
    check = created["data"]["totals_check"]
    assert check["payments_total"] == {"amount": "23.98", "currency": "GBP"}
    assert check["computed_grand_total"] == created["data"]["totals"]["grand_total"]


def test_the_customer_email_is_normalised_and_the_raw_kept(adapter, connection, kit_order):
    events, _, _ = poll_round(adapter, connection)
    [created] = of_type(events, "order.created")
    assert created["identity"]["email"] == "jo.1@example.com"
    assert created["identity"]["email_raw"] == " Jo.1@Example.com "
    assert created["identity"]["source_customer_id"] == "cu-1"


def test_an_order_without_a_stokly_customer_is_a_guest_keyed_by_email(adapter, connection, fake):
    sale = order(2, created="2026-05-27T10:00:00.000Z", customer=None, email="Guest@Example.com")
    fake.saleorders = [sale]
    events, _, _ = poll_round(adapter, connection)
    [person] = of_type(events, "customer.upserted")
    assert person["data"]["is_guest"] is True
    assert person["data"]["customer_key"] == "stokly:acme:customer:email:guest@example.com"
    assert schema_errors(person) == []


def test_order_statuses_map_through_the_table_and_removed_is_cancelled(adapter, connection, fake):
    fake.saleorders = [order(3, created="2026-05-27T10:00:00.000Z", stage="removed")]
    events, warnings, _ = poll_round(adapter, connection)
    [status] = of_type(events, "order.status_changed")
    assert status["data"]["to"] == {
        "lifecycle": "cancelled",
        "fulfilment": "unfulfilled",
        "financial": "unknown",
    }
    assert status["data"]["source_status_raw"] == "stage=removed; items=unprocessed"
    assert warnings == []


def test_an_unknown_item_status_changes_nothing_and_is_a_warning(adapter, connection, fake):
    fake.saleorders = [order(4, created="2026-05-27T10:00:00.000Z", statuses=("picked",))]
    events, warnings, _ = poll_round(adapter, connection)
    statuses = of_type(events, "order.status_changed")
    assert all("fulfilment" not in e["data"]["to"] for e in statuses)
    assert {w["code"] for w in warnings} == {"unknown_status"}
    assert "picked" in warnings[0]["message"]


def test_a_tenant_status_map_adds_item_statuses(adapter, connection, fake):
    connection.options = {
        **connection.options,
        "status_map": {"item_statuses": {"dispatched": "dispatched"}},
    }
    fake.saleorders = [
        order(5, created="2026-05-27T10:00:00.000Z", statuses=("dispatched", "unprocessed"))
    ]
    events, warnings, _ = poll_round(adapter, connection)
    assert (
        of_type(events, "order.status_changed")[0]["data"]["to"]["fulfilment"]
        == "partially_dispatched"
    )
    assert warnings == []


def test_a_status_change_is_a_new_event_and_an_unchanged_status_the_same_one(
    adapter, connection, fake
):
    connection.options = {
        **connection.options,
        "status_map": {"item_statuses": {"dispatched": "dispatched"}},
    }
    fake.saleorders = [order(6, created="2026-05-27T10:00:00.000Z")]
    first, _, cursor = poll_round(adapter, connection)
    again, _, cursor = poll_round(adapter, connection, cursor)
    fake.saleorders[0]["itemStatuses"] = ["dispatched"]
    changed, _, _ = poll_round(adapter, connection, cursor)
    ids = lambda events: {e["source_event_id"] for e in of_type(events, "order.status_changed")}  # noqa: E731
    assert ids(again) == ids(first)  # the engine drops these as duplicates
    assert ids(changed) - ids(first)
    new = [
        e
        for e in of_type(changed, "order.status_changed")
        if e["source_event_id"] not in ids(first)
    ]
    assert new[0]["data"]["to"]["fulfilment"] == "dispatched"


def test_a_paid_invoice_marks_its_order_paid(adapter, connection, fake):
    fake.invoices = [
        {
            "invoiceId": "inv-1",
            "saleOrderId": "so-1",
            "saleOrderNiceId": 1001,
            "issueDate": "2026-05-27T11:00:00.000Z",
            "status": "paid",
            "currency": "GBP",
        },
        {
            "invoiceId": "inv-2",
            "saleOrderId": "so-2",
            "saleOrderNiceId": 1002,
            "issueDate": "2026-05-27T11:00:00.000Z",
            "status": "unpaid",
            "currency": "GBP",
        },
    ]
    events, _, _ = poll_round(adapter, connection)
    [paid] = of_type(events, "order.status_changed")
    assert paid["data"]["to"] == {"financial": "paid"}
    assert paid["data"]["order_key"] == "stokly:acme:order:so-1"


# -- polling -----------------------------------------------------------------------------------


def test_orders_are_paged_and_each_is_read_once_per_round(adapter, connection, fake):
    fake.saleorders = [order(n, created=f"2026-05-27T10:0{n}:00.000Z") for n in range(5)]
    events, _, _ = poll_round(adapter, connection)
    created = of_type(events, "order.created")
    assert sorted(e["data"]["order_number"] for e in created) == [
        "1000",
        "1001",
        "1002",
        "1003",
        "1004",
    ]
    pages = [
        q["page"][0]
        for _, _, q in fake.calls("/v2/saleorders")
        if "filter" not in q or "createdAt" in q.get("sortField", [""])[0]
    ]
    assert {"0", "1", "2"} <= set(pages)


def test_the_next_round_filters_from_the_newest_order_less_the_look_back(adapter, connection, fake):
    fake.saleorders = [order(1, created="2026-05-27T10:30:00.000Z")]
    _, _, cursor = poll_round(adapter, connection)
    fake.requests.clear()
    poll_round(adapter, connection, cursor)
    filters = [
        q["filter"][0] for _, path, q in fake.requests if path == "/v2/saleorders" and "filter" in q
    ]
    assert "[createdAt]>={2026-05-27T10:20}" in filters


def test_customers_are_read_by_their_date_field_in_stoklys_filter_syntax(adapter, connection, fake):
    fake.customers = [
        {
            "customerId": "cu-9",
            "name": {"forename": "Sam", "surname": "Lee"},
            "fullName": "Sam Lee",
            "barcode": "ACC-9",
            "type": 0,
            "status": 1,
            "email": "SAM@example.com",
            "updatedAt": "2026-05-27T09:00:00.000Z",
        },
        {
            "customerId": "cu-10",
            "name": {"forename": "No", "surname": "Mail"},
            "barcode": "ACC-10",
            "updatedAt": "2026-05-27T09:05:00.000Z",
        },
    ]
    events, _, cursor = poll_round(adapter, connection)
    sam, nomail = of_type(events, "customer.upserted")
    assert sam["identity"]["email"] == "sam@example.com"
    assert sam["data"]["account_code"] == "ACC-9"
    assert (
        nomail["identity"]["quality"] == "none"
        and nomail["identity"]["source_customer_id"] == "cu-10"
    )
    assert all(schema_errors(e) == [] for e in (sam, nomail))
    fake.requests.clear()
    poll_round(adapter, connection, cursor)
    query = next(q for _, path, q in fake.requests if path == "/v0/customers")
    assert query["filter"] == ["[updatedAt]>={2026-05-27T08:55}"]
    assert query["sortField"] == ["updatedAt"]


def test_a_rate_limit_answer_is_transient_blocks_the_budget_and_the_cursor_stays_put(
    adapter, connection, fake, clock
):
    fake.faults.append(("/v0/customers", 429, '{"message": "slow down"}', {"Retry-After": "7"}))
    cursor = ""
    with pytest.raises(RateLimited) as caught:
        for _ in range(10):
            cursor = adapter.poll(connection, cursor).cursor
    assert caught.value.retry_after == 7.0 and not caught.value.permanent
    with pytest.raises(RateLimited):  # nobody calls Stokly until Retry-After has passed
        adapter.poll(connection, cursor)
    clock.now += 7
    before = len(fake.calls("/v0/customers"))
    poll_round(adapter, connection, cursor)  # the same cursor reads that page next time
    assert len(fake.calls("/v0/customers")) > before


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (502, False), (404, True), (400, True)]
)
def test_server_errors_are_transient_and_client_errors_permanent(
    adapter, connection, fake, status, permanent
):
    fake.faults.append(("/v0/customers", status, '{"message": "boom"}', {}))
    with pytest.raises(SourceError) as caught:
        poll_round(adapter, connection)
    assert caught.value.permanent is permanent


def test_the_shared_budget_refuses_calls_past_the_rate(adapter, connection, fake):
    connection.options = {**connection.options, "requests_per_minute": 2}
    fake.saleorders = [order(n, created=f"2026-05-27T10:0{n}:00.000Z") for n in range(3)]
    with pytest.raises(RateLimited) as caught:
        poll_round(adapter, connection)
    assert caught.value.retry_after > 0


def test_an_unreachable_stokly_is_transient(adapter, connection, fake):
    fake.stop()
    with pytest.raises(SourceError) as caught:
        adapter.poll(connection, "")
    assert not caught.value.permanent
    fake.start()


def test_filter_literals_with_special_characters_are_typed() -> None:
    assert filter_literal("2026-05-27T10:20") == "{2026-05-27T10:20}"
    assert filter_literal("A&&B") == "{@string;A&&B}"


# -- catalogue and stock -----------------------------------------------------------------------


def test_listings_become_the_catalogue(adapter, connection, fake):
    page = json.loads((PAYLOADS / "listings-list-page.json").read_text(), parse_float=Decimal)
    simple = json.loads((PAYLOADS / "listing-get-simple.json").read_text(), parse_float=Decimal)[
        "data"
    ]
    variable = json.loads(
        (PAYLOADS / "listing-get-variable.json").read_text(), parse_float=Decimal
    )["data"]
    channel = page["data"][0]["channelId"]
    fake.listings[channel] = [*page["data"], simple, variable]
    connection.options = {**connection.options, "listing_channel_id": channel}
    events, _, _ = poll_round(adapter, connection)
    products = {e["data"]["sku"]: e for e in of_type(events, "product.updated")}
    assert set(products) == {
        "TREKKER-KIT",
        "1GlassSide-Standard",
        "KINDLING10WAXLINGS2",
        "linktestl",
        "linktestv",
    }
    assert all(schema_errors(e) == [] for e in products.values())
    assert products["linktestl"]["data"]["price"] == {"amount": "1.00", "currency": "GBP"}
    assert products["linktestl"]["data"]["status"] == "active"
    assert products["linktestv"]["data"]["is_variant_parent"] is True
    assert len(products["linktestv"]["data"]["variant_listing_ids"]) == 3
    assert (
        products["TREKKER-KIT"]["data"]["product_key"]
        == "stokly:acme:product:b9af18d4-da04-479e-b1cd-52a1a6e59ba8"
    )


def test_the_catalogue_is_swept_again_only_after_its_interval(adapter, connection, fake, clock):
    page = json.loads((PAYLOADS / "listings-list-page.json").read_text())
    channel = page["data"][0]["channelId"]
    fake.listings[channel] = page["data"]
    connection.options = {
        **connection.options,
        "listing_channel_id": channel,
        "catalogue_sweep_minutes": 60,
    }
    _, _, cursor = poll_round(adapter, connection)
    fake.requests.clear()
    _, _, cursor = poll_round(adapter, connection, cursor)
    assert fake.calls("/v0/channels") == []
    clock.now += 3601
    events, _, _ = poll_round(adapter, connection, cursor)
    assert len(of_type(events, "product.updated")) == 3


def test_inventory_records_become_stock_snapshots_per_bin(adapter, connection, fake):
    fake.inventory = [
        {
            "itemId": "i1",
            "itemSku": "MUG-RED",
            "itemName": "Mug",
            "locationName": "Leeds",
            "binId": "b1",
            "binName": "A-01",
            "onHand": 4,
        },
        {
            "itemId": "i1",
            "itemSku": "MUG-RED",
            "itemName": "Mug",
            "locationName": "Leeds",
            "binId": "b2",
            "binName": "A-02",
            "onHand": 0,
        },
        {
            "itemId": "i2",
            "itemSku": "ROPE",
            "itemName": "Rope",
            "locationName": "Leeds",
            "binId": "b3",
            "binName": "B-01",
            "onHand": 2.5,
        },
    ]
    events, warnings, _ = poll_round(adapter, connection)
    stock = of_type(events, "stock.changed")
    assert [(e["data"]["location"]["key"], e["data"]["quantities"]["on_hand"]) for e in stock] == [
        ("b1", 4),
        ("b2", 0),
    ]
    assert stock[0]["data"]["location"]["name"] == "Leeds / A-01"
    # Stokly gives what is in the bin only: saleable is derived from it, and flagged so.
    assert stock[0]["data"]["quantities"]["saleable"] == 4
    assert stock[0]["data"]["derived"] == ["saleable"]
    assert all(schema_errors(e) == [] for e in stock)
    assert [w["code"] for w in warnings] == ["fractional_stock"]


def test_every_event_of_a_full_round_validates_against_the_published_schema(
    adapter, connection, fake, kit_order
):
    fake.customers = [
        {"customerId": "cu-1", "email": "a@b.co", "updatedAt": "2026-05-27T09:00:00.000Z"}
    ]
    fake.inventory = [{"itemId": "i1", "itemSku": "MUG-RED", "binId": "b1", "onHand": 1}]
    events, _, _ = poll_round(adapter, connection)
    assert {e["event_type"] for e in events} >= {
        "order.created",
        "order.status_changed",
        "customer.upserted",
        "stock.changed",
    }
    for event in events:
        assert schema_errors(event) == [], event


def test_the_cursor_survives_a_round_trip_through_text(adapter, connection, fake):
    fake.saleorders = [order(n, created=f"2026-05-27T10:0{n}:00.000Z") for n in range(3)]
    page = adapter.poll(connection, "")
    assert json.loads(page.cursor)["stream"] in ("customers", "listings", "orders")
    with pytest.raises(SourceError):
        adapter.poll(connection, "not json")
