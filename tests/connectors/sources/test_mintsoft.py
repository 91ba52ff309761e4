"""Mintsoft: its real payloads and documented quirks become canonical events (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from connectors.models import Connection
from connectors.sources.base import WebhookRequestData
from connectors.sources.mintsoft import mapping, stock
from connectors.sources.mintsoft.adapter import MintsoftAdapter
from connectors.sources.registry import get_adapter

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "mintsoft"
SCHEMA = (
    Path(__file__).resolve().parents[3] / "monitoring" / "schemas" / "canonical-event.schema.json"
)
RECEIVED = datetime(2026, 2, 11, 9, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def assert_valid(events: list[dict[str, Any]]) -> None:
    """Every event validates against the canonical schema the engine publishes."""
    if not SCHEMA.exists():  # pragma: no cover - the engine's file
        pytest.skip("no published canonical schema")
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    for event in events:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]
        assert not errors, (event["event_type"], errors)


def ctx(**kwargs: Any) -> mapping.Context:
    return mapping.Context(account="3", received_at=RECEIVED, **kwargs)


def connection(**options: Any) -> Connection:
    return Connection(pk=7, kind="mintsoft", name="Mintsoft", options={"client_id": 3, **options})


def callback(body: Any, name: str | None = None, **headers: str) -> WebhookRequestData:
    return WebhookRequestData(
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
        query_string=urlencode({"callback": name}) if name is not None else "",
    )


def by_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def adapter() -> MintsoftAdapter:
    return MintsoftAdapter(now=lambda: RECEIVED)


# -- captured payloads ----------------------------------------------------------------------


def test_the_registry_serves_mintsoft_connections():
    assert isinstance(get_adapter("mintsoft"), MintsoftAdapter)


def test_every_captured_order_of_the_list_becomes_valid_events():
    events = [
        e for raw in load("order-list-response.json") for e in mapping.order_events(raw, ctx())
    ]
    assert_valid(events)
    assert [e["event_type"] for e in events] == [
        "order.created",
        "order.status_changed",
        "order.created",
        "order.status_changed",
    ]


def test_a_new_order_is_open_and_unfulfilled_with_financial_unknown():
    raw = load("order-list-response.json")[0]
    created = mapping.order_created(mapping.Order(raw, ctx()))
    assert created is not None
    assert created["data"]["status"] == {
        "lifecycle": "open",
        "fulfilment": "unfulfilled",
        "financial": "unknown",
    }
    assert created["data"]["source_status_raw"] == "1:NEW"


def test_a_picked_order_is_processing_and_names_its_previous_status():
    raw = load("order-list-response.json")[1]
    status = mapping.order_status_changed(mapping.Order(raw, ctx()))
    assert status["data"]["to"]["fulfilment"] == "processing"
    assert status["data"]["source_status_raw"] == "17:PICKED"
    assert status["data"]["from_source_status_raw"] == "16:PICKINGSTARTED"


def test_mintsoft_times_without_an_offset_are_read_in_the_warehouse_time_zone():
    raw = load("order-list-response.json")[0]  # OrderDate 2026-02-09T14:41:08.996542, winter
    created = mapping.order_created(mapping.Order(raw, ctx()))
    assert created is not None
    assert created["data"]["placed_at"] == "2026-02-09T14:41:08.996542Z"
    assert created["occurred_at_quality"] == "source_local_tz"
    summer = mapping.parse_time("2025-07-01T10:00:00", ZoneInfo("Europe/London"))
    assert summer is not None and mapping.rfc3339(summer[0]) == "2025-07-01T09:00:00Z"


def test_seven_fractional_digits_of_dotnet_iso_times_are_read():
    parsed = mapping.parse_time("2026-02-09T14:41:29.0904148", ZoneInfo("Europe/London"))
    assert parsed is not None
    assert mapping.rfc3339(parsed[0]) == "2026-02-09T14:41:29.090414Z"


def test_dotnet_json_dates_are_utc_epoch_milliseconds_and_exact():
    parsed = mapping.parse_time("/Date(1770648068996+0000)/", ZoneInfo("Europe/London"))
    assert parsed == (datetime(2026, 2, 9, 14, 41, 8, 996000, tzinfo=UTC), "exact")
    # The offset suffix only says how to display it: the milliseconds are UTC.
    shifted = mapping.parse_time("/Date(1770648068996+0100)/", ZoneInfo("Europe/London"))
    assert shifted is not None and shifted[0] == parsed[0]
    assert mapping.parse_time("/Date(garbage)/", ZoneInfo("UTC")) is None


def test_an_order_without_email_keeps_its_phone_and_says_so():
    raw = load("order-list-response.json")[0]  # Email null, Phone 1111111111, US
    identity = mapping.Order(raw, ctx()).identity()
    assert identity["email"] is None
    assert identity["phone_e164"] == "+11111111111"
    assert identity["quality"] == "phone_only"


def test_an_order_with_neither_email_nor_phone_has_identity_quality_none():
    raw = load("order-list-response.json")[1]
    assert mapping.Order(raw, ctx()).identity()["quality"] == "none"


def test_an_order_whose_personal_data_was_removed_has_no_identity():
    raw = {**load("synthetic/callback-despatched.json"), "PIIRemoved": True}
    assert mapping.Order(raw, ctx()).identity() == {
        "email": None,
        "phone_e164": None,
        "is_guest": None,
        "quality": "none",
    }


def test_order_money_is_a_decimal_string_and_marked_as_not_mintsofts():
    created = mapping.order_created(
        mapping.Order(load("synthetic/callback-despatched.json"), ctx())
    )
    assert created is not None
    assert created["data"]["totals"]["grand_total"] == {"amount": "28.48", "currency": "GBP"}
    assert created["data"]["lines"][1]["unit_price"] == {"amount": "7.99", "currency": "GBP"}
    assert created["data"]["carries_money"] is False


def test_the_raw_sku_is_kept_beside_the_cleaned_one():
    created = mapping.order_created(
        mapping.Order(load("synthetic/callback-despatched.json"), ctx())
    )
    assert created is not None
    line = created["data"]["lines"][1]
    assert (line["sku_raw"], line["sku"]) == (" ab-12/RED ", "ab-12/RED")


@pytest.mark.parametrize(
    ("status_id", "expected"),
    [
        (1, {"lifecycle": "open", "fulfilment": "unfulfilled"}),
        (2, {"lifecycle": "open", "fulfilment": "processing"}),
        (3, {"lifecycle": "cancelled"}),
        (4, {"lifecycle": "open", "fulfilment": "dispatched"}),
        (5, {"lifecycle": "open", "fulfilment": "dispatched"}),
        (6, {"lifecycle": "open", "fulfilment": "dispatched"}),
        (7, {"lifecycle": "open", "fulfilment": "backordered"}),
        (8, None),
        (9, {"lifecycle": "open", "fulfilment": "backordered"}),
        (10, {"lifecycle": "on_hold"}),
        (11, {"lifecycle": "on_hold"}),
        (12, {"lifecycle": "on_hold"}),
        (13, {"lifecycle": "on_hold"}),
        (14, {"lifecycle": "on_hold", "fulfilment": "processing"}),
        (15, {"lifecycle": "open", "fulfilment": "processing"}),
        (16, {"lifecycle": "open", "fulfilment": "processing"}),
        (17, {"lifecycle": "open", "fulfilment": "processing"}),
        (18, {"lifecycle": "on_hold"}),
        (19, {"lifecycle": "open", "fulfilment": "processing"}),
        (20, {"lifecycle": "open", "fulfilment": "processing"}),
        (21, {"lifecycle": "open", "fulfilment": "processing"}),
        (22, {"lifecycle": "open", "fulfilment": "processing"}),
        (23, {"lifecycle": "open", "fulfilment": "processing"}),
    ],
)
def test_each_of_the_23_statuses_maps_to_the_canonical_vocabulary(status_id, expected):
    raw = {**load("order-list-response.json")[0], "OrderStatusId": status_id}
    to, raw_name = mapping.Order(raw, ctx()).status()
    assert to == (None if expected is None else {**expected, "financial": "unknown"})
    assert raw_name.startswith(f"{status_id}:")


def test_the_status_table_covers_exactly_the_captured_status_list():
    captured = {s["ID"]: s["Name"] for s in load("order-statuses.json")}
    assert captured == mapping.STATUS_NAMES
    assert set(mapping.STATUS_MAP) == set(captured)


def test_a_failed_order_changes_nothing_and_signals_a_source_error():
    raw = {**load("order-list-response.json")[0], "OrderStatusId": 8}
    event = mapping.order_status_changed(mapping.Order(raw, ctx()))
    assert event["data"]["to"] == {}
    assert event["data"]["signal"] == "source_error"
    assert_valid([event])


def test_an_unknown_status_changes_nothing_and_signals_it():
    raw = {**load("order-list-response.json")[0], "OrderStatusId": 99}
    event = mapping.order_status_changed(mapping.Order(raw, ctx()))
    assert event["data"]["to"] == {}
    assert event["data"]["signal"] == "unmapped_status"


def test_a_tenant_can_override_a_status_mapping_by_id():
    raw = {**load("order-list-response.json")[0], "OrderStatusId": 21}
    overridden = ctx(status_overrides={"21": {"lifecycle": "open", "fulfilment": "backordered"}})
    to, _ = mapping.Order(raw, overridden).status()
    assert to == {"lifecycle": "open", "fulfilment": "backordered", "financial": "unknown"}


# -- callbacks ------------------------------------------------------------------------------


def test_the_despatch_callback_gives_a_dispatch_without_carrier_movement():
    body = load("synthetic/callback-despatched.json")
    items = adapter().parse_webhook(connection(), callback(body, "despatched"))
    assert not items.errors
    assert_valid(items.events)
    assert sorted(e["event_type"] for e in items.events) == [
        "order.created",
        "order.status_changed",
        "shipment.dispatched",
    ]
    shipment = by_type(items.events, "shipment.dispatched")[0]
    assert shipment["data"]["dispatched_at"] == "2026-02-04T18:45:10.500000Z"
    assert shipment["data"]["tracking_numbers"] == ["1Z999AA10123456784"]
    assert shipment["data"]["shipment_key"] == "mintsoft:3:shipment:TEST CLIENT-1917-Copy-Copy:1"
    assert shipment["identity"]["email"] == "test.customer@example.com"
    assert shipment["identity"]["email_raw"] == " Test.Customer@Example.COM "
    assert not by_type(items.events, "shipment.carrier_scanned")
    assert items.positions == [0, 0, 0]


def test_only_the_delivered_callback_gives_a_carrier_scan():
    body = load("synthetic/callback-delivered.json")
    items = adapter().parse_webhook(connection(), callback(body, "delivered"))
    assert_valid(items.events)
    scan = by_type(items.events, "shipment.carrier_scanned")[0]
    assert scan["data"]["scan_status"] == "delivered"
    assert scan["data"]["scanned_at"] == "2026-02-06T09:12:00.250000Z"
    assert scan["data"]["tracking_number"] == "1Z999AA10123456784"


def test_a_delivered_callback_also_covers_a_lost_despatch_callback_with_the_same_id():
    despatch = adapter().parse_webhook(
        connection(), callback(load("synthetic/callback-despatched.json"), "despatched")
    )
    delivered = adapter().parse_webhook(
        connection(), callback(load("synthetic/callback-delivered.json"), "delivered")
    )
    ids = {e["source_event_id"] for e in by_type(despatch.events, "shipment.dispatched")}
    assert ids == {e["source_event_id"] for e in by_type(delivered.events, "shipment.dispatched")}


def test_the_cancel_callback_cancels_the_order():
    body = load("synthetic/callback-cancelled.json")
    items = adapter().parse_webhook(connection(), callback(body, "cancelled"))
    assert_valid(items.events)
    status = by_type(items.events, "order.status_changed")[0]
    assert status["data"]["to"] == {"lifecycle": "cancelled", "financial": "unknown"}
    assert status["occurred_at"] == "2026-02-09T14:50:00Z"  # /Date(1770648600000)/
    assert status["occurred_at_quality"] == "exact"


def test_without_a_callback_name_a_cancelled_or_despatched_body_is_still_understood():
    cancelled = adapter().parse_webhook(
        connection(), callback(load("synthetic/callback-cancelled.json"))
    )
    despatched = adapter().parse_webhook(
        connection(), callback(load("synthetic/callback-despatched.json"))
    )
    assert (
        by_type(cancelled.events, "order.status_changed")[0]["data"]["to"]["lifecycle"]
        == "cancelled"
    )
    assert by_type(despatched.events, "shipment.dispatched")


def test_the_callback_can_be_named_by_header():
    body = load("synthetic/callback-delivered.json")
    items = adapter().parse_webhook(
        connection(), callback(body, None, **{"X-Mintsoft-Callback": "delivered"})
    )
    assert by_type(items.events, "shipment.carrier_scanned")


def test_an_unknown_callback_name_is_refused():
    items = adapter().parse_webhook(connection(), callback({"ID": 1}, "exploded"))
    assert not items.events
    assert items.errors[0].errors[0]["path"] == "callback"


def test_a_body_that_is_not_json_is_an_error_not_an_exception():
    request = WebhookRequestData(body=b"<xml/>", content_type="text/xml", headers={})
    items = adapter().parse_webhook(connection(), request)
    assert items.errors and not items.events


def test_an_order_without_an_id_is_an_item_error():
    body = {k: v for k, v in load("synthetic/callback-despatched.json").items() if k != "ID"}
    items = adapter().parse_webhook(connection(), callback(body, "despatched"))
    assert items.errors[0].index == 0
    assert items.errors[0].errors[0]["path"] == "ID"


def test_a_repeated_callback_gives_the_same_source_event_ids():
    body = load("synthetic/callback-despatched.json")
    first = adapter().parse_webhook(connection(), callback(body, "despatched"))
    again = adapter().parse_webhook(connection(), callback(body, "despatched"))
    assert [e["source_event_id"] for e in first.events] == [
        e["source_event_id"] for e in again.events
    ]


def test_a_poll_and_a_callback_of_the_same_order_version_give_the_same_ids():
    body = load("synthetic/callback-despatched.json")
    via_callback = adapter().parse_webhook(connection(), callback(body, "despatched")).events
    via_poll = mapping.order_events(body, ctx())
    assert {e["source_event_id"] for e in via_callback} == {e["source_event_id"] for e in via_poll}


# -- split orders ---------------------------------------------------------------------------


def test_a_despatched_part_of_a_split_order_is_a_partial_dispatch_of_the_same_order():
    part = load("synthetic/order-split-part2-despatched.json")
    events = mapping.order_events(part, ctx())
    assert_valid(events)
    assert not by_type(events, "order.created")  # the first part carries the order
    status = by_type(events, "order.status_changed")[0]
    assert status["data"]["to"]["fulfilment"] == "partially_dispatched"
    shipment = by_type(events, "shipment.dispatched")[0]
    assert shipment["data"]["order_key"] == "mintsoft:3:order:TEST CLIENT-1917-Copy-Copy"
    assert shipment["data"]["shipment_key"].endswith(":2")
    assert (
        shipment["data"]["part"],
        shipment["data"]["parts"],
        shipment["data"]["is_partial"],
    ) == (
        2,
        2,
        True,
    )


def test_two_parts_of_a_split_order_are_two_shipments_of_one_order():
    first = {**load("synthetic/callback-despatched.json"), "NumberOfParts": 2}
    second = load("synthetic/order-split-part2-despatched.json")
    shipments = [
        by_type(mapping.order_events(raw, ctx()), "shipment.dispatched")[0]
        for raw in (first, second)
    ]
    assert len({s["data"]["order_key"] for s in shipments}) == 1
    assert len({s["data"]["shipment_key"] for s in shipments}) == 2


# -- returns and stock ----------------------------------------------------------------------


def test_a_confirmed_return_is_received_with_each_lines_condition_and_no_money():
    reasons = {r["ID"]: r for r in load("return-reasons.json")}
    raw = load("synthetic/return-search-by-date.json")[0]
    event = mapping.return_received(raw, ctx(), reasons)
    assert event is not None
    assert_valid([event])
    lines = event["data"]["lines"]
    assert [(line["sku"], line["condition"]) for line in lines] == [
        ("ab-12/RED", "quarantined"),  # from the captured reason table: Quarantine
        ("TESTSKU", "saleable"),
    ]
    assert "amount" not in event["data"]
    assert event["data"]["order_key"] == "mintsoft:3:order:TEST CLIENT-1917-Copy-Copy"


def test_a_pre_advised_return_not_yet_confirmed_is_not_received():
    raw = load("synthetic/return-search-by-date.json")[1]
    assert mapping.return_received(raw, ctx()) is None


def test_the_captured_stock_report_sums_per_sku_per_warehouse():
    levels = stock.stock_levels(load("products-in-location-report.json"), ctx())
    assert levels[("General / Wholesale", "TESTSKU")]["on_hand"] == 91 + 19 + 10
    assert levels[("General / Wholesale", "PRODUCT1")]["on_hand"] == 1 + 7 + 3 + 10
    asn = levels[("General / Wholesale", "TESTASN1")]
    # 7 off-hand in GOODS IN (not put away yet): not on hand, but incoming
    assert (asn["on_hand"], asn["off_hand"], asn["incoming"]) == (3, 7, 7)


def test_stock_events_are_valid_snapshots_with_saleable_marked_derived():
    levels = stock.stock_levels(load("products-in-location-report.json"), ctx(), warehouse_key="3")
    events = [stock.stock_changed(level, ctx(), "3", RECEIVED) for level in levels.values()]
    assert_valid(events)
    testsku = next(e for e in events if e["data"]["sku"] == "TESTSKU")
    assert testsku["data"]["quantities"] == {
        "on_hand": 120,
        "allocated": 0,
        "saleable": 120,
        "quarantined": 0,
        "incoming": 0,
    }
    assert testsku["data"]["derived"] == ["saleable"]
    assert testsku["data"]["mode"] == "snapshot"
    assert testsku["data"]["location"]["key"] == "mintsoft:3:warehouse:3"


def test_quarantined_and_allocated_stock_is_not_saleable():
    rows = [
        {
            "Warehouse": "W",
            "ProductSKU": "A",
            "Type": "Allocation",
            "LocationType": "BULK",
            "Quantity": "10",
            "AllocatedOrder": "",
        },
        {
            "Warehouse": "W",
            "ProductSKU": "A",
            "Type": "Allocation",
            "LocationType": "QUARANTINE",
            "Quantity": "2",
            "AllocatedOrder": "",
        },
        {
            "Warehouse": "W",
            "ProductSKU": "A",
            "Type": "Allocation",
            "LocationType": "PICK",
            "Quantity": "3",
            "AllocatedOrder": "1919",
        },
    ]
    level = stock.stock_levels(rows, ctx())[("W", "A")]
    event = stock.stock_changed(level, ctx(), "W", RECEIVED)
    assert event["data"]["quantities"]["on_hand"] == 15
    assert event["data"]["quantities"]["saleable"] == 10
    assert event["data"]["quantities"]["quarantined"] == 2
    assert event["data"]["quantities"]["allocated"] == 3


def test_mintsoft_never_produces_refunds():
    sources = [load("synthetic/callback-despatched.json"), *load("order-list-response.json")]
    events = [e for raw in sources for e in mapping.order_events(raw, ctx())]
    events += [
        e
        for raw in load("synthetic/return-search-by-date.json")
        if (e := mapping.return_received(raw, ctx()))
    ]
    assert not by_type(events, "refund.issued")
