"""Brightpearl: id-only webhooks become notifications; fetched records (the recorded payloads)
become canonical events. No network here: see test_brightpearl_fetch.py for the HTTP side."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.models import Connection
from connectors.sources.base import WebhookRequestData
from connectors.sources.brightpearl import mapping, products
from connectors.sources.brightpearl.adapter import BrightpearlAdapter, _consent
from connectors.sources.registry import get_adapter
from tests.factories import make_connection

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "brightpearl"
SCHEMA = (
    Path(__file__).resolve().parents[3] / "monitoring" / "schemas" / "canonical-event.schema.json"
)
RECEIVED = datetime(2026, 2, 11, 9, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def assert_valid(events: list[dict[str, Any]]) -> None:
    if not SCHEMA.exists():  # pragma: no cover - the engine's file
        pytest.skip("no published canonical schema")
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    for event in events:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]
        assert not errors, (event["event_type"], errors)


def ctx(**status_map: str) -> mapping.Context:
    return mapping.Context(account="acme", received_at=RECEIVED, status_map=status_map)


def connection(**options: Any) -> Connection:
    return Connection(kind="brightpearl", name="BP", options={"account_code": "acme", **options})


def by_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def sales_order() -> dict[str, Any]:
    return load("order-get-sales-order.json")["response"][0]


def hook(body: Any) -> WebhookRequestData:
    return WebhookRequestData(
        body=json.dumps(body).encode(), content_type="application/json", headers={}
    )


# -- webhooks -------------------------------------------------------------------------------


def test_the_registry_serves_brightpearl_connections_through_the_notification_path():
    adapter = get_adapter("brightpearl")
    assert isinstance(adapter, BrightpearlAdapter)
    assert adapter.sends_ids_only and adapter.can_poll


def test_a_webhook_is_a_notification_naming_ids_never_an_event():
    items = BrightpearlAdapter().parse_webhook(
        connection(), hook(load("synthetic/webhook-goods-out-note-shipped.json"))
    )
    assert not items.events and not items.errors
    assert items.notifications == [
        {
            "resource_type": "goods-out-note",
            "id_set": "12447605",
            "lifecycle_event": "modified",
            "full_event": "goods-out-note.modified.shipped",
            "raised_on": "2025-11-04T16:41:39.000Z",
            "account_code": "acme",
        }
    ]


def test_the_synthetic_webhook_bodies_follow_the_captured_registration_template():
    template = load("webhook-get-registration.json")["response"][0]["bodyTemplate"]
    keys = {part.split('"')[1] for part in template.split(",")}
    for name in ("webhook-order-modified.json", "webhook-contact-modified.json"):
        assert set(load(f"synthetic/{name}")) == keys


def test_a_webhook_for_another_account_is_refused():
    body = {**load("synthetic/webhook-order-modified.json"), "accountCode": "someone-else"}
    items = BrightpearlAdapter().parse_webhook(connection(), hook(body))
    assert not items.notifications
    assert items.errors[0].errors[0]["path"] == "accountCode"


def test_a_webhook_for_a_resource_syncdesk_does_not_read_is_refused_with_advice():
    body = {**load("synthetic/webhook-order-modified.json"), "resourceType": "goods-in-note"}
    items = BrightpearlAdapter().parse_webhook(connection(), hook(body))
    assert "unsubscribe" in items.errors[0].errors[0]["message"]


def test_a_webhook_without_ids_or_with_a_bad_id_set_is_refused():
    body = load("synthetic/webhook-order-modified.json")
    items = BrightpearlAdapter().parse_webhook(
        connection(), hook([{**body, "id": ""}, {**body, "id": "9-1"}, body])
    )
    assert [e.index for e in items.errors] == [0, 1]
    assert len(items.notifications) == 1


def test_id_sets_expand_and_compress():
    assert mapping.expand_id_set("1-3,7") == [1, 2, 3, 7]
    assert mapping.compress_ids([7, 1, 2, 3, 9, 10]) == "1-3,7,9-10"
    with pytest.raises(mapping.MappingError):
        mapping.expand_id_set("1-999999")


# -- sales orders ---------------------------------------------------------------------------


def test_the_captured_sales_order_becomes_valid_events():
    events = mapping.order_events(sales_order(), ctx(**{"4": "closed"}))
    assert_valid(events)
    assert [e["event_type"] for e in events] == [
        "order.created",
        "order.updated",
        "order.status_changed",
    ]


def test_money_keeps_brightpearls_four_decimal_places_as_strings():
    created = mapping.order_events(sales_order(), ctx())[0]
    line = created["data"]["lines"][0]
    assert line["unit_price"] == {"amount": "10.0000", "currency": "USD"}
    assert line["line_subtotal"] == {"amount": "9.0909", "currency": "USD"}
    assert line["line_tax"] == {"amount": "0.9100", "currency": "USD"}
    assert created["data"]["totals"]["grand_total"] == {"amount": "10.0000", "currency": "USD"}
    assert created["data"]["carries_money"] is True


def test_prices_including_tax_make_gross_line_totals():
    created = mapping.order_events(sales_order(), ctx())[0]
    assert created["data"]["tax_inclusive"] is True  # priceModeCode INC
    assert created["data"]["lines"][0]["line_total"] == {"amount": "10.0009", "currency": "USD"}


def test_brightpearl_offsets_are_converted_to_utc_and_exact():
    created = mapping.order_events(sales_order(), ctx())[0]
    assert created["data"]["placed_at"] == "2020-03-31T21:02:44Z"  # 15:02:44-06:00
    assert created["occurred_at_quality"] == "exact"
    assert created["source_updated_at"] == "2020-03-31T21:57:21Z"


def test_the_order_number_is_the_brightpearl_id_and_the_raw_sku_is_kept():
    created = mapping.order_events(sales_order(), ctx())[0]
    assert created["data"]["order_number"] == "1"
    assert created["links"]["order_key"] == "brightpearl:acme:order:1"
    line = created["data"]["lines"][0]
    assert (line["sku_raw"], line["sku"], line["line_key"]) == ("TEST001", "TEST001", "1")


def test_a_customer_with_a_contact_is_not_a_guest():
    identity = mapping.order_events(sales_order(), ctx())[0]["identity"]
    assert identity == {
        "email": "demo@test.com",
        "email_raw": "demo@test.com",
        "phone_e164": None,  # "01245 845632": no country code, not guessed
        "source_customer_id": "200",
        "is_guest": False,
        "quality": "email",
    }


def test_a_web_order_without_contact_or_email_is_a_guest_with_no_identity():
    raw = load("synthetic/order-get-web-order-bundle-no-email.json")["response"][0]
    created = mapping.order_events(raw, ctx())[0]
    assert_valid([created])
    assert created["identity"]["is_guest"] is True
    assert created["identity"]["quality"] == "none"
    assert created["data"]["channel_order_ref"] == "shop-1001"


def test_bundle_components_point_at_their_parent_line():
    raw = load("synthetic/order-get-web-order-bundle-no-email.json")["response"][0]
    lines = mapping.order_events(raw, ctx())[0]["data"]["lines"]
    assert [(ln["line_key"], ln["parent_line_key"]) for ln in lines] == [("11", None), ("12", "11")]
    assert lines[0]["sku"] == "GIFT-SET" and lines[0]["sku_raw"] == "GIFT-SET "
    assert lines[0]["line_total"] == {"amount": "20.0000", "currency": "USD"}  # EXC: net


def test_a_mapped_tenant_status_sets_the_lifecycle():
    status = by_type(
        mapping.order_events(sales_order(), ctx(**{"4": "closed"})), "order.status_changed"
    )[0]
    assert status["data"]["to"] == {
        "lifecycle": "closed",
        "fulfilment": "dispatched",
        "financial": "pending",
    }
    assert status["data"]["source_status_raw"] == "4:Invoiced"
    assert "signal" not in status["data"]


def test_an_unmapped_tenant_status_changes_no_lifecycle_and_signals_it():
    events = mapping.order_events(sales_order(), ctx())
    status = by_type(events, "order.status_changed")[0]
    assert "lifecycle" not in status["data"]["to"]
    assert status["data"]["signal"] == "unmapped_status"
    assert status["data"]["unmapped_status"] == {"id": "4", "name": "Invoiced"}
    assert_valid(events)


def test_a_cancelled_order_is_cancelled_whatever_its_status_name():
    raw = {**sales_order(), "isCanceled": True}
    status = by_type(mapping.order_events(raw, ctx()), "order.status_changed")[0]
    assert status["data"]["to"]["lifecycle"] == "cancelled"


def test_a_refetched_order_gives_the_same_ids_and_a_modified_one_new_ones():
    first = [e["source_event_id"] for e in mapping.order_events(sales_order(), ctx())]
    again = [e["source_event_id"] for e in mapping.order_events(sales_order(), ctx())]
    changed = {**sales_order(), "updatedOn": "2020-04-01T09:00:00.000-06:00"}
    later = [e["source_event_id"] for e in mapping.order_events(changed, ctx())]
    assert first == again
    assert later[0] == first[0]  # order.created only once
    assert later[1:] != first[1:]


def test_purchase_orders_are_not_ours():
    raw = load("extra/order-get-purchase-order.json")["response"][0]
    assert raw["orderTypeCode"] == "PO"
    assert mapping.order_events(raw, ctx()) == []


# -- sales credits → refunds ----------------------------------------------------------------


def test_a_paid_sales_credit_is_a_refund_of_its_parent_order():
    raw = load("synthetic/order-get-sales-credit-paid.json")["response"][0]
    events = mapping.order_events(raw, ctx())
    assert_valid(events)
    refund = events[0]
    assert refund["event_type"] == "refund.issued"
    assert refund["data"]["order_key"] == "brightpearl:acme:order:1"
    assert refund["data"]["amount"] == {"amount": "10.0000", "currency": "USD"}
    assert refund["data"]["refunded_at"] == "2020-04-03T16:15:00Z"
    assert refund["links"]["order_number"] == "1"


def test_an_unpaid_sales_credit_is_not_yet_a_refund():
    raw = load("synthetic/order-get-sales-credit-unpaid.json")["response"][0]
    assert mapping.order_events(raw, ctx()) == []


# -- goods-out notes ------------------------------------------------------------------------


def test_the_captured_shipped_goods_out_note_is_a_dispatch_of_its_order():
    ((note_id, raw),) = load("goods-out-note-get.json")["response"].items()
    events = mapping.goods_out_note_events(note_id, raw, ctx())
    assert_valid(events)
    shipment = events[0]
    assert shipment["event_type"] == "shipment.dispatched"
    assert shipment["data"]["order_key"] == "brightpearl:acme:order:988116"
    assert shipment["data"]["shipment_key"] == "brightpearl:acme:shipment:12447605"
    assert shipment["data"]["dispatched_at"] == "2025-11-04T16:41:38Z"
    assert shipment["data"]["tracking_numbers"] == []  # shipping.reference ""
    assert sorted(ln["line_key"] for ln in shipment["data"]["lines"]) == [
        "2975384",
        "2975385",
        "2975386",
        "2975387",
    ]


def test_a_goods_out_note_not_yet_shipped_gives_nothing():
    ((note_id, raw),) = load("goods-out-note-get.json")["response"].items()
    unshipped = {**raw, "status": {**raw["status"], "shipped": False}}
    assert mapping.goods_out_note_events(note_id, unshipped, ctx()) == []


def test_brightpearl_never_claims_carrier_movement():
    ((note_id, raw),) = load("goods-out-note-get.json")["response"].items()
    events = mapping.goods_out_note_events(note_id, raw, ctx()) + mapping.order_events(
        sales_order(), ctx()
    )
    assert not by_type(events, "shipment.carrier_scanned")


# -- products and stock ---------------------------------------------------------------------


def test_the_captured_product_is_an_active_product_with_its_sku():
    raw = load("extra/product-get.json")["response"][0]
    event = products.product_updated(raw, ctx())
    assert event is not None
    assert_valid([event])
    assert (event["data"]["sku"], event["data"]["status"], event["data"]["name"]) == (
        "TEST001",
        "active",
        "Nice Shirt for Summer",
    )


def test_in_stock_is_on_hand_and_brightpearls_on_hand_is_saleable():
    availability = load("product-availability-get.json")["response"]
    as_of = datetime(2022, 1, 27, 21, 50, tzinfo=UTC)
    events = products.stock_events(
        availability, {"1532": "SHIRT-B", "1007": "TEST001"}, ctx(), as_of
    )
    assert_valid(events)
    shirt = next(e for e in events if e["data"]["sku"] == "SHIRT-B")
    assert shirt["data"]["quantities"] == {
        "on_hand": 60,
        "allocated": 12,
        "saleable": 48,
        "quarantined": None,
        "incoming": 0,
    }
    assert shirt["data"]["location"]["key"] == "brightpearl:acme:warehouse:2"
    assert shirt["occurred_at"] == "2022-01-27T21:50:00Z"


def test_stock_of_a_product_without_a_known_sku_is_left_out():
    availability = load("product-availability-get.json")["response"]
    events = products.stock_events(availability, {"1007": "TEST001"}, ctx(), None)
    assert {e["data"]["sku"] for e in events} == {"TEST001"}


# -- contacts and consent -------------------------------------------------------------------


def contact() -> dict[str, Any]:
    return load("contact-get.json")["response"][0]


def test_the_captured_contact_is_a_customer_upsert_in_utc():
    event = mapping.customer_upserted(contact(), ctx())
    assert_valid([event])
    assert event["data"]["customer_key"] == "brightpearl:acme:customer:151499"
    assert (
        event["data"]["source_updated_at"] == "2025-08-28T20:59:22.970000Z"
    )  # -06:00 in the payload
    assert event["identity"]["email"] == "test@gmail.com"
    assert event["identity"]["phone_e164"] == "+50600000000"
    assert "status" not in event["data"]  # customers never carry consent


def test_the_first_sight_of_a_ticked_newsletter_box_is_a_subscription():
    seen: dict[str, str] = {}
    event = _consent(contact(), ctx(), seen)
    assert event is not None
    assert_valid([event])
    assert event["data"]["status"] == "subscribed"
    assert event["data"]["consent_at"] == "2025-08-28T20:59:22.970000Z"
    assert event["data"]["consent_at_exact"] is False


def test_a_repeat_with_the_flag_unchanged_is_the_same_event_and_a_change_is_a_new_one():
    seen: dict[str, str] = {}
    first = _consent(contact(), ctx(), seen)
    renamed = {**contact(), "firstName": "Johnny", "updatedOn": "2025-09-01T10:00:00.000-06:00"}
    again = _consent(renamed, ctx(), seen)
    opted_out = {
        **renamed,
        "marketingDetails": {"isReceiveEmailNewsletter": False},
        "updatedOn": "2025-09-02T10:00:00.000-06:00",
    }
    out = _consent(opted_out, ctx(), seen)
    assert first is not None and again is not None and out is not None
    assert again["source_event_id"] == first["source_event_id"]
    assert again["data"]["consent_at"] == first["data"]["consent_at"]
    assert out["source_event_id"] != first["source_event_id"]
    assert out["data"]["status"] == "unsubscribed"


def test_the_first_sight_of_an_unticked_box_is_never_subscribed_not_an_opt_out():
    unticked = {**contact(), "marketingDetails": {"isReceiveEmailNewsletter": False}}
    event = _consent(unticked, ctx(), {})
    assert event is not None and event["data"]["status"] == "not_subscribed"


def test_a_contact_without_marketing_details_says_nothing_about_consent():
    raw = {k: v for k, v in contact().items() if k != "marketingDetails"}
    assert _consent(raw, ctx(), {}) is None


def test_fetching_contacts_keeps_the_newsletter_state_on_the_connection(world):
    adapter = BrightpearlAdapter(now=lambda: RECEIVED)
    conn = make_connection(world.workspace, "brightpearl", options={"account_code": "acme"})
    records = [("151499", contact())]
    first = adapter._contacts(conn, records, ctx())
    again = adapter._contacts(conn, records, ctx())
    assert [e["event_type"] for e in first] == ["customer.upserted", "consent.changed"]
    conn.refresh_from_db()
    assert conn.options["newsletter"]["151499"].startswith("1|")
    assert conn.options["account_code"] == "acme"
    assert (
        by_type(first, "consent.changed")[0]["source_event_id"]
        == by_type(again, "consent.changed")[0]["source_event_id"]
    )
