"""OrderWise: export definitions polled by keyset with a look-back in the server's time zone, a
per-tenant status map, the legacy ExportData XML push, credit notes, shared web accounts.

No OrderWise payload is public: the export rows are synthetic in the shape of the SQL on the setup
page (column names from sources.md §7 where it lists them), the legacy XML synthetic from the
public parsing code (thelar/fbf-orderwise: order/orderNo, orderStatus, deliveries/deliveryNumber,
deliveryDate, courierName, consignmentNumbers/consignmentNumber).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from connectors.models import Connection
from connectors.sources.base import SourceError, WebhookRequestData
from connectors.sources.orderwise.adapter import OrderwiseAdapter
from connectors.sources.orderwise.api import _TOKENS, RateLimited
from connectors.sources.orderwise.mapping import parse_local
from connectors.sources.registry import get_adapter
from tests.connectors.sources.fakes.orderwise import FakeOrderwise
from tests.factories import make_connection, make_workspace

SCHEMA = (
    Path(__file__).resolve().parents[3] / "monitoring" / "schemas" / "canonical-event.schema.json"
)
LONDON = ZoneInfo("Europe/London")
START = datetime(2026, 5, 27, 12, 0, tzinfo=UTC).timestamp()
STATUS_MAP = {
    "Awaiting despatch": {"lifecycle": "open", "fulfilment": "unfulfilled"},
    "On hold": {"lifecycle": "on_hold"},
    "Partially despatched": {"fulfilment": "partially_dispatched"},
    "Completed": {"lifecycle": "closed", "fulfilment": "dispatched"},
}


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


def order_rows(
    oh_id: int,
    number: str,
    *,
    lines: int = 2,
    status: str = "Awaiting despatch",
    cu_id: str = "C100",
    email: str = "jo@example.com",
    amended: str = "2026-05-27 11:00:00",
    **extra: Any,
) -> list[dict[str, Any]]:
    head = {
        "row_id": oh_id, "amended": amended, "oh_order_number": number, "oh_cust_order_ref": f"#WEB{oh_id}",
        "oh_datetime": "2026-05-27 10:30:00", "os_description": status, "cu_id": cu_id, "cu_account": f"ACC-{cu_id}",
        "contact_email": email, "contact_first_name": "Jo", "contact_last_name": "Bloggs", "currency_code": "GBP",
        "oh_net": 20.00, "oh_tax": 4.00, "oh_gross": 27.99, "oh_delivery_gross": 3.99, **extra,
    }  # fmt: skip
    return [
        {**head, "ol_id": oh_id * 10 + n, "vad_variant_code": f"SKU-{n}", "vad_description": f"Thing {n}",
         "ol_quantity": 1, "ol_unit_price": 10.00, "ol_net": 10.00, "ol_tax": 2.00, "ol_gross": 12.00}
        for n in range(lines)
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Any:
    _TOKENS.clear()
    yield
    _TOKENS.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> Any:
    server = FakeOrderwise().start()
    yield server
    server.stop()


@pytest.fixture
def connection(db: Any, fake: FakeOrderwise) -> Connection:
    return make_connection(
        make_workspace("ow"),
        "orderwise",
        options={
            "base_url": fake.url,
            "account": "acme",
            "page_size": 3,
            "lookback_minutes": 30,
            "export_definitions": {
                "orders": "11",
                "deliveries": "12",
                "credit_notes": "13",
                "customers": "14",
                "products": "15",
                "stock": "16",
            },
            "status_map": STATUS_MAP,
            "shared_customer_ids": ["WEB"],
        },
        credentials={"username": fake.username, "password": fake.password},
    )


@pytest.fixture
def adapter(clock: Clock) -> OrderwiseAdapter:
    instance = OrderwiseAdapter()
    instance.clock = clock
    return instance


def poll_round(
    adapter: OrderwiseAdapter, connection: Connection, cursor: str = ""
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
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["event_type"] == event_type:
            unique.setdefault(event["source_event_id"], event)
    return list(unique.values())


def test_orderwise_is_registered_as_a_poller_with_a_webhook() -> None:
    assert isinstance(get_adapter("orderwise"), OrderwiseAdapter)


# -- auth --------------------------------------------------------------------------------------


def test_basic_credentials_are_exchanged_for_a_token_once(adapter, connection, fake):
    fake.definitions["11"] = order_rows(1, "SO1")
    poll_round(adapter, connection)
    poll_round(adapter, connection)
    assert len(fake.calls("/OWAPI/token/gettoken")) == 1
    export_calls = fake.calls("/OWAPI/ExportDefinition")
    assert all(h["Authorization"].startswith("Bearer ") for _, _, h in export_calls)


def test_an_expired_token_is_fetched_again_once_and_the_call_retried(adapter, connection, fake):
    poll_round(adapter, connection)
    fake.expire_tokens()
    fake.definitions["11"] = order_rows(1, "SO1")
    events, _, _ = poll_round(adapter, connection)
    assert len(fake.calls("/OWAPI/token/gettoken")) == 2
    assert of_type(events, "order.created")


def test_basic_mode_sends_the_credentials_on_every_call(adapter, connection, fake):
    connection.options = {**connection.options, "auth": "basic"}
    poll_round(adapter, connection)
    assert fake.calls("/OWAPI/token/gettoken") == []
    assert all(
        h["Authorization"].startswith("Basic ") for _, _, h in fake.calls("/OWAPI/ExportDefinition")
    )


def test_wrong_credentials_are_a_permanent_error(adapter, connection):
    connection.credentials = {"username": "api-user", "password": "nope"}
    with pytest.raises(SourceError) as caught:
        adapter.poll(connection, "")
    assert caught.value.permanent and "nope" not in caught.value.message


def test_testing_the_connection_runs_one_export_definition(adapter, connection, fake):
    fake.definitions["15"] = []
    connection.options = {**connection.options, "export_definitions": {"products": "15"}}
    assert "export definition 15" in adapter.test_connection(connection)


# -- orders, statuses, guests ------------------------------------------------------------------


def test_an_order_becomes_order_created_in_utc_from_the_servers_local_time(
    adapter, connection, fake
):
    fake.definitions["11"] = order_rows(1, "SO1")
    events, warnings, _ = poll_round(adapter, connection)
    [created] = of_type(events, "order.created")
    assert schema_errors(created) == []
    assert warnings == []
    data = created["data"]
    assert data["placed_at"] == "2026-05-27T09:30:00Z"  # 10:30 BST
    assert created["occurred_at_quality"] == "source_local_tz"
    assert created["source_updated_at"] == "2026-05-27T10:00:00Z"
    assert data["order_key"] == "orderwise:acme:order:SO1"
    assert data["channel_order_ref"] == "#WEB1"
    assert [line["sku"] for line in data["lines"]] == ["SKU-0", "SKU-1"]
    assert data["lines"][0]["line_total"] == {"amount": "12.00", "currency": "GBP"}
    assert data["totals"]["grand_total"] == {"amount": "27.99", "currency": "GBP"}
    # Gross throughout, so the parts add up whichever way VAT is split: 12 + 12 + 3.99 delivery.
    assert data["tax_inclusive"] is True
    assert data["lines"][0]["unit_price"] == {"amount": "12.00", "currency": "GBP"}
    assert data["totals"]["subtotal"] == {"amount": "24.00", "currency": "GBP"}
    assert data["status"] == {"lifecycle": "open", "fulfilment": "unfulfilled"}
    assert created["identity"]["source_customer_id"] == "C100"


def test_a_known_status_is_order_status_changed_through_the_tenants_table(
    adapter, connection, fake
):
    fake.definitions["11"] = order_rows(1, "SO1", status=" completed ")
    events, _, _ = poll_round(adapter, connection)
    [status] = of_type(events, "order.status_changed")
    assert status["data"]["to"] == {"lifecycle": "closed", "fulfilment": "dispatched"}
    assert status["data"]["source_status_raw"] == "completed"
    assert schema_errors(status) == []


def test_an_order_amended_after_an_earlier_round_is_order_updated_with_its_new_money(
    adapter, connection, fake
):
    placed = "2026-05-27 08:00:00"
    fake.definitions["11"] = order_rows(1, "SO1", oh_datetime=placed)
    events, _, cursor = poll_round(adapter, connection)
    assert len(of_type(events, "order.created")) == 1
    assert of_type(events, "order.updated") == []  # first seen: created only

    # A day later the order gains a dearer delivery: oh_gross and the delivery change.
    fake.definitions["11"] = [
        {**row, "amended": "2026-05-28 09:00:00", "oh_gross": 31.98, "oh_delivery_gross": 7.98}
        for row in order_rows(1, "SO1", oh_datetime=placed)
    ]
    events, _, _ = poll_round(adapter, connection, cursor)
    [updated] = of_type(events, "order.updated")
    assert updated["data"]["revision"] == "2026-05-28T08:00:00Z"  # 09:00 BST
    assert updated["data"]["totals"]["grand_total"] == {"amount": "31.98", "currency": "GBP"}
    assert updated["data"]["totals"]["shipping"] == {"amount": "7.98", "currency": "GBP"}
    assert updated["source_updated_at"] == "2026-05-28T08:00:00Z"
    assert schema_errors(updated) == []
    # The same amendment read again (the look-back) is the same event.
    again, _, _ = poll_round(adapter, connection, cursor)
    assert [e["source_event_id"] for e in of_type(again, "order.updated")] == [
        updated["source_event_id"]
    ]


def test_an_unknown_status_changes_nothing_and_is_a_warning(adapter, connection, fake):
    fake.definitions["11"] = order_rows(1, "SO1", status="Awaiting courier")
    events, warnings, _ = poll_round(adapter, connection)
    assert of_type(events, "order.status_changed") == []
    [created] = of_type(events, "order.created")
    assert created["data"]["status"] == {}  # no guess
    assert [(w["code"], w["subject"]) for w in warnings] == [("unknown_status", "SO1")]
    assert "Awaiting courier" in warnings[0]["message"]


def test_a_status_map_entry_that_is_not_canonical_is_refused(adapter, connection, fake):
    connection.options = {
        **connection.options,
        "status_map": {"Awaiting despatch": {"fulfilment": "shipped"}},
    }
    fake.definitions["11"] = order_rows(1, "SO1")
    events, warnings, _ = poll_round(adapter, connection)
    assert of_type(events, "order.status_changed") == []
    assert warnings[0]["code"] == "unknown_status"


def test_web_orders_on_the_shared_account_are_guests_not_one_person(adapter, connection, fake):
    fake.definitions["11"] = [
        *order_rows(1, "SO1", cu_id="WEB", email="Ann@Example.com"),
        *order_rows(2, "SO2", cu_id="WEB", email="bob@example.com"),
    ]
    events, _, _ = poll_round(adapter, connection)
    created = of_type(events, "order.created")
    assert {e["identity"]["source_customer_id"] for e in created} == {None}
    assert {e["identity"]["is_guest"] for e in created} == {True}
    people = of_type(events, "customer.upserted")
    assert sorted(p["data"]["customer_key"] for p in people) == [
        "orderwise:acme:customer:email:ann@example.com",
        "orderwise:acme:customer:email:bob@example.com",
    ]
    assert all(schema_errors(p) == [] for p in people)


def test_the_shared_account_itself_is_never_a_customer(adapter, connection, fake):
    fake.definitions["14"] = [
        {
            "row_id": 1,
            "amended": "2026-05-27 09:00:00",
            "cu_id": "WEB",
            "cu_account": "WEBSTORE",
            "contact_email": "shop@retailer.example",
        },
        {
            "row_id": 2,
            "amended": "2026-05-27 09:00:00",
            "cu_id": "C7",
            "cu_account": "ACC7",
            "cu_name": "Sam Ltd",
            "contact_id": 70,
            "contact_email": "SAM@example.com",
            "contact_first_name": "Sam",
        },
    ]
    events, _, _ = poll_round(adapter, connection)
    [sam] = of_type(events, "customer.upserted")
    assert sam["data"]["customer_key"] == "orderwise:acme:customer:C7"
    assert sam["identity"]["email"] == "sam@example.com"
    assert schema_errors(sam) == []


# -- deliveries, credit notes, catalogue, stock ------------------------------------------------


def delivery_rows(dh_id: int, consignment: str = "") -> list[dict[str, Any]]:
    head = {"row_id": dh_id, "amended": "2026-05-27 11:30:00", "dh_number": f"D{dh_id}", "oh_order_number": "SO1",
            "oh_cust_order_ref": "#WEB1", "dh_datetime": "2026-05-27 11:15:00", "dh_consignment_number": consignment,
            "courier_name": "DPD", "cod_tracking_url_prefix": "https://track.example/?c=", "cod_tracking_url_suffix": "&pc=LS1"}  # fmt: skip
    return [
        {**head, "vad_variant_code": "SKU-0", "dl_quantity": 1},
        {**head, "vad_variant_code": "SKU-1", "dl_quantity": 2},
    ]


def test_a_delivery_is_shipment_dispatched_and_its_consignment_a_tracking_update(
    adapter, connection, fake
):
    fake.definitions["12"] = delivery_rows(5, "CN123")
    events, _, _ = poll_round(adapter, connection)
    [shipped] = of_type(events, "shipment.dispatched")
    assert shipped["data"]["dispatched_at"] == "2026-05-27T10:15:00Z"
    assert shipped["data"]["lines"] == [
        {"sku": "SKU-0", "quantity": 1},
        {"sku": "SKU-1", "quantity": 2},
    ]
    assert shipped["data"]["tracking_urls"] == ["https://track.example/?c=CN123&pc=LS1"]
    assert shipped["links"]["order_number"] == "SO1"
    [tracking] = of_type(events, "shipment.tracking_updated")
    assert tracking["data"]["tracking_numbers"] == ["CN123"]
    assert all(schema_errors(e) == [] for e in (shipped, tracking))


def test_a_consignment_number_that_arrives_later_is_a_new_tracking_event(adapter, connection, fake):
    fake.definitions["12"] = delivery_rows(5)
    first, _, cursor = poll_round(adapter, connection)
    assert of_type(first, "shipment.tracking_updated") == []
    fake.definitions["12"] = [
        {**r, "dh_consignment_number": "CN9", "amended": "2026-05-27 12:40:00"}
        for r in delivery_rows(5)
    ]
    later, _, _ = poll_round(adapter, connection, cursor)
    assert {e["source_event_id"] for e in of_type(later, "shipment.dispatched")} == {
        e["source_event_id"] for e in of_type(first, "shipment.dispatched")
    }
    assert of_type(later, "shipment.tracking_updated")[0]["data"]["tracking_numbers"] == ["CN9"]


def test_a_credit_note_is_a_refund_of_its_order(adapter, connection, fake):
    fake.definitions["13"] = [
        {"row_id": 8, "amended": "2026-05-28 09:00:00", "cn_number": "CN-8", "oh_order_number": "SO1", "cn_datetime": "2026-05-28 08:59:00",
         "cn_gross": -12.00, "currency_code": "GBP", "cn_reason": "Faulty", "vad_variant_code": "SKU-0", "cnl_quantity": 1, "cnl_gross": -12.00,
         "contact_email": "jo@example.com", "cu_id": "C100"},
    ]  # fmt: skip
    events, _, _ = poll_round(adapter, connection)
    [refund] = of_type(events, "refund.issued")
    assert refund["data"]["amount"] == {"amount": "12.00", "currency": "GBP"}
    assert refund["data"]["order_key"] == "orderwise:acme:order:SO1"
    assert refund["data"]["refunded_at"] == "2026-05-28T07:59:00Z"
    assert refund["data"]["reason"] == "Faulty"
    assert schema_errors(refund) == []


def test_variants_are_the_catalogue_and_separator_characters_in_skus_warn(
    adapter, connection, fake
):
    fake.definitions["15"] = [
        {
            "row_id": 1,
            "amended": "2026-05-27 08:00:00",
            "vad_variant_code": "MUG/RED",
            "vad_description": "Mug",
            "vafp_rsp_exc_vat": "8.3250",
            "vad_active": 1,
        },
        {
            "row_id": 2,
            "amended": "2026-05-27 08:00:00",
            "vad_variant_code": "BAD~SKU",
            "vad_description": "Odd",
            "vad_active": 0,
        },
    ]
    events, warnings, _ = poll_round(adapter, connection)
    mug, odd = of_type(events, "product.updated")
    assert mug["data"]["price"] == {"amount": "8.3250", "currency": "GBP"}
    assert odd["data"]["status"] == "inactive"
    assert [w["code"] for w in warnings] == ["sku_separator"]
    assert all(schema_errors(e) == [] for e in (mug, odd))


def test_free_stock_is_the_saleable_quantity(adapter, connection, fake):
    fake.definitions["16"] = [
        {
            "row_id": 1,
            "amended": "2026-05-27 12:50:00",
            "vad_variant_code": "SKU-0",
            "location_code": "MAIN",
            "location_name": "Main",
            "on_hand": 10,
            "allocated": 3,
            "free_stock": 7,
        }
    ]
    events, _, _ = poll_round(adapter, connection)
    [stock] = of_type(events, "stock.changed")
    assert stock["data"]["quantities"] == {
        "on_hand": 10,
        "allocated": 3,
        "saleable": 7,
        "quarantined": None,
        "incoming": None,
    }
    assert schema_errors(stock) == []


# -- paging, cursor, window --------------------------------------------------------------------


def test_keyset_pages_never_split_an_order_across_pages(adapter, connection, fake):
    fake.definitions["11"] = [
        *order_rows(1, "SO1", lines=2),
        *order_rows(2, "SO2", lines=2),
        *order_rows(3, "SO3", lines=1),
    ]
    events, _, _ = poll_round(adapter, connection)
    created = {e["data"]["order_number"]: e for e in of_type(events, "order.created")}
    assert sorted(created) == ["SO1", "SO2", "SO3"]
    assert len(created["SO2"]["data"]["lines"]) == 2
    last_ids = [q["last_id"][0] for _, q, _ in fake.calls("/OWAPI/ExportDefinition/11")]
    assert last_ids[:3] == ["0", "1", "2"]


def test_a_definition_that_ignores_the_paging_parameters_still_pages_correctly(
    adapter, connection, fake
):
    fake.ignores_paging = True
    fake.definitions["11"] = [*order_rows(1, "SO1"), *order_rows(2, "SO2"), *order_rows(3, "SO3")]
    events, _, _ = poll_round(adapter, connection)
    assert sorted(e["data"]["order_number"] for e in of_type(events, "order.created")) == [
        "SO1",
        "SO2",
        "SO3",
    ]


def test_the_next_round_asks_from_the_newest_change_less_the_look_back_in_server_time(
    adapter, connection, fake
):
    fake.definitions["11"] = order_rows(1, "SO1", amended="2026-05-27 11:00:00")
    _, _, cursor = poll_round(adapter, connection)
    fake.requests.clear()
    poll_round(adapter, connection, cursor)
    [(_, query, _)] = fake.calls("/OWAPI/ExportDefinition/11")
    assert query["since"] == ["2026-05-27T10:30:00"]  # 11:00 local less 30 minutes, local again


def test_rows_older_than_the_window_are_not_read_again(adapter, connection, fake):
    fake.honours_since = False
    fake.definitions["11"] = order_rows(1, "SO1", amended="2026-05-27 09:00:00")
    _, _, cursor = poll_round(adapter, connection)
    fake.definitions["11"] += order_rows(2, "SO2", amended="2026-05-27 11:00:00")
    events, _, cursor = poll_round(adapter, connection, cursor)
    events, _, _ = poll_round(adapter, connection, cursor)
    assert [e["data"]["order_number"] for e in of_type(events, "order.created")] == ["SO2"]


def test_a_gap_longer_than_the_export_window_is_a_warning(adapter, connection, fake, clock):
    connection.options = {**connection.options, "export_window_minutes": 60}
    _, _, cursor = poll_round(adapter, connection)
    clock.now += 2 * 3600
    _, warnings, _ = poll_round(adapter, connection, cursor)
    assert "window_gap" in {w["code"] for w in warnings}


@pytest.mark.parametrize(
    ("text", "utc", "quality"),
    [
        ("2026-01-15 10:00:00", "2026-01-15T10:00:00+00:00", "source_local_tz"),  # GMT
        ("2026-07-15T10:00:00", "2026-07-15T09:00:00+00:00", "source_local_tz"),  # BST
        (
            "2026-10-25 01:30:00",
            "2026-10-25T00:30:00+00:00",
            "source_local_tz",
        ),  # the repeated hour
        ("15/07/2026 10:00", "2026-07-15T09:00:00+00:00", "source_local_tz"),
        ("2026-07-15", "2026-07-14T23:00:00+00:00", "date_only"),
        ("2026-07-15T10:00:00Z", "2026-07-15T10:00:00+00:00", "exact"),
        ("/Date(1784109600000)/", "2026-07-15T10:00:00+00:00", "exact"),
    ],
)
def test_server_times_are_read_in_the_tenants_zone(text, utc, quality):
    moment, got = parse_local(text, LONDON)
    assert moment is not None and moment.isoformat() == utc
    assert got == quality


def test_an_unknown_time_zone_is_a_permanent_error(adapter, connection):
    connection.options = {**connection.options, "time_zone": "Mars/Olympus"}
    with pytest.raises(SourceError) as caught:
        adapter.poll(connection, "")
    assert caught.value.permanent


def test_a_rate_limit_is_transient_and_blocks_the_budget(adapter, connection, fake, clock):
    fake.faults.append(("/OWAPI/ExportDefinition", 429, "{}", {"Retry-After": "30"}))
    with pytest.raises(RateLimited) as caught:
        poll_round(adapter, connection)
    assert caught.value.retry_after == 30.0
    with pytest.raises(RateLimited):
        adapter.poll(connection, "")
    clock.now += 30
    poll_round(adapter, connection)


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (404, True)])
def test_server_errors_are_transient_and_a_missing_definition_permanent(
    adapter, connection, fake, status, permanent
):
    fake.faults.append(("/OWAPI/ExportDefinition", status, "{}", {}))
    with pytest.raises(SourceError) as caught:
        poll_round(adapter, connection)
    assert caught.value.permanent is permanent


def test_an_unreachable_server_is_transient(adapter, connection, fake):
    fake.stop()
    with pytest.raises(SourceError) as caught:
        adapter.poll(connection, "")
    assert not caught.value.permanent
    fake.start()


# -- the legacy e-commerce push ----------------------------------------------------------------

LEGACY_XML = """<?xml version="1.0" encoding="utf-8"?>
<orders>
  <order>
    <orderNo>100045</orderNo>
    <orderStatus>Completed</orderStatus>
    <deliveries>
      <deliveryNumber>D-77</deliveryNumber>
      <deliveryDate>27/05/2026 14:05</deliveryDate>
      <courierName>DX</courierName>
      <consignmentNumbers><consignmentNumber>DX123456</consignmentNumber></consignmentNumbers>
    </deliveries>
  </order>
  <order>
    <orderNo>100046</orderNo>
    <orderStatus>Awaiting despatch</orderStatus>
    <deliveries><delivery><deliveryNumber></deliveryNumber></delivery></deliveries>
  </order>
</orders>"""


def push(
    body: bytes, content_type: str = "application/x-www-form-urlencoded"
) -> WebhookRequestData:
    return WebhookRequestData(body, content_type, {})


def test_the_legacy_push_of_status_xml_in_exportdata_becomes_events(connection):
    items = OrderwiseAdapter().parse_webhook(
        connection, push(urlencode({"ExportData": LEGACY_XML}).encode())
    )
    assert items.errors == []
    kinds = [(e["event_type"], e["entity"]["source_ref"]) for e in items.events]
    assert kinds == [
        ("order.status_changed", "100045"),
        ("shipment.dispatched", "100045"),
        ("shipment.tracking_updated", "100045"),
        ("order.status_changed", "100046"),
    ]
    assert items.positions == [0, 0, 0, 1]
    shipped = items.events[1]
    assert shipped["data"]["dispatched_at"] == "2026-05-27T13:05:00Z"
    assert shipped["data"]["tracking_numbers"] == ["DX123456"]
    assert shipped["data"]["carrier"] == {"code": "DX", "name": "DX"}
    assert shipped["links"] == {
        "order_key": "orderwise:acme:order:ref:100045",
        "channel_order_ref": "100045",
    }
    for event in items.events:
        assert schema_errors(event) == [], event


def test_the_legacy_order_number_can_be_orderwises_own(connection):
    connection.options = {**connection.options, "legacy_order_number_is": "order_number"}
    items = OrderwiseAdapter().parse_webhook(
        connection, push(urlencode({"ExportData": LEGACY_XML}).encode())
    )
    assert items.events[0]["data"]["order_key"] == "orderwise:acme:order:100045"
    assert items.events[0]["links"]["order_number"] == "100045"


def test_a_pushed_unknown_status_is_an_item_error_and_changes_nothing(connection):
    xml = "<orders><order><orderNo>9</orderNo><orderStatus>Lost in space</orderStatus></order></orders>"
    items = OrderwiseAdapter().parse_webhook(
        connection, push(urlencode({"ExportData": xml}).encode())
    )
    assert items.events == []
    [error] = items.errors
    assert error.index == 0 and "Lost in space" in error.errors[0]["message"]


def test_a_raw_xml_body_is_read_too(connection):
    items = OrderwiseAdapter().parse_webhook(connection, push(LEGACY_XML.encode(), "text/xml"))
    assert len(items.events) == 4


def test_a_tilde_separated_id_list_is_an_acknowledgement_not_events(connection):
    items = OrderwiseAdapter().parse_webhook(connection, push(b"ExportData=12345~17~19"))
    assert items.events == [] and "acknowledgement" in items.errors[0].errors[0]["message"]


def test_xml_with_a_dtd_is_refused(connection):
    xml = '<!DOCTYPE x [<!ENTITY a "aaaa">]><orders><order><orderNo>&a;</orderNo></order></orders>'
    items = OrderwiseAdapter().parse_webhook(
        connection, push(urlencode({"ExportData": xml}).encode())
    )
    assert items.events == [] and "DTD" in items.errors[0].errors[0]["message"]


def test_a_form_without_exportdata_or_broken_xml_is_refused(connection):
    assert OrderwiseAdapter().parse_webhook(connection, push(b"Other=1")).errors
    assert OrderwiseAdapter().parse_webhook(connection, push(b"ExportData=%3Corders%3E")).errors


def test_the_legacy_push_is_accepted_by_the_webhook_url(connection):
    token = connection.rotate_webhook_token()
    response = Client().post(
        f"/hooks/{token}/",
        data=urlencode({"ExportData": LEGACY_XML}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 4


def test_every_event_of_a_full_round_validates_against_the_published_schema(
    adapter, connection, fake
):
    fake.definitions["11"] = [
        *order_rows(1, "SO1", status="Completed"),
        *order_rows(2, "SO2", cu_id="WEB"),
    ]
    fake.definitions["12"] = delivery_rows(5, "CN1")
    events, _, _ = poll_round(adapter, connection)
    assert {e["event_type"] for e in events} >= {
        "order.created",
        "order.status_changed",
        "customer.upserted",
        "shipment.dispatched",
    }
    for event in events:
        assert schema_errors(event) == [], event
    assert datetime.fromisoformat(events[0]["occurred_at"]).tzinfo is not None
