"""Patchworks: process flows post canonical events or the start-flow payload; opt-outs go back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from connectors.models import Connection
from connectors.sources.base import SourceError, WebhookRequestData
from connectors.sources.canonical.adapter import CanonicalAdapter
from connectors.sources.patchworks.adapter import PatchworksAdapter, connection_for_bearer
from connectors.sources.registry import get_adapter
from tests.connectors.sources.fakes.patchworks import FakePatchworks
from tests.factories import make_connection

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "patchworks"
SCHEMA = (
    Path(__file__).resolve().parents[3] / "monitoring" / "schemas" / "canonical-event.schema.json"
)


def schema_errors(event: dict[str, Any]) -> list[str]:
    if not SCHEMA.exists():  # the engine publishes it; until then nothing to check against
        return []
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


AT = "2026-05-01T10:00:00Z"
ORDER_KEY = "erp:acct:order:SO-1"
STATUS = {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"}
ORDER_BODY = {
    "order_key": ORDER_KEY,
    "order_number": "SO-1",
    "placed_at": AT,
    "currency": "GBP",
    "lines": [{"line_key": "1", "sku": "AB-1", "quantity": 1, "line_total": money("10.00")}],
    "totals": {"grand_total": money("10.00")},
    "status": STATUS,
}
DATA_BY_TYPE: dict[str, dict[str, Any]] = {
    "customer.upserted": {"customer_key": "erp:acct:customer:C1", "source_updated_at": AT},
    "consent.changed": {"channel": "email", "status": "unsubscribed", "consent_at": AT},
    "order.created": ORDER_BODY,
    "order.updated": {**ORDER_BODY, "revision": AT},
    "order.status_changed": {"order_key": ORDER_KEY, "to": STATUS, "source_status_raw": "Paid"},
    "shipment.dispatched": {
        "shipment_key": "erp:acct:shipment:1",
        "order_key": ORDER_KEY,
        "dispatched_at": AT,
        "lines": [{"sku": "AB-1", "quantity": 1}],
    },
    "shipment.tracking_updated": {
        "shipment_key": "erp:acct:shipment:1",
        "tracking_numbers": ["T1"],
    },
    "shipment.carrier_scanned": {
        "shipment_key": "erp:acct:shipment:1",
        "scan_status": "delivered",
        "scanned_at": AT,
    },
    "refund.issued": {
        "refund_key": "erp:acct:refund:R1",
        "order_key": ORDER_KEY,
        "refunded_at": AT,
        "amount": money("4.00"),
    },
    "return.received": {
        "return_key": "erp:acct:return:RT1",
        "order_key": ORDER_KEY,
        "received_at": AT,
        "lines": [{"sku": "AB-1", "quantity": 1}],
    },
    "stock.changed": {
        "sku": "AB-1",
        "location": {"key": "main"},
        "quantities": {"on_hand": 5, "saleable": 4},
        "as_of": AT,
        "mode": "snapshot",
    },
    "product.updated": {"sku": "AB-1", "product_key": "erp:acct:product:1", "status": "active"},
}


def canonical_event(event_type: str, n: int = 1) -> dict[str, Any]:
    return {
        "schema": "sync.event/v1",
        "event_type": event_type,
        "source": {"system": "erp", "account": "acct", "channel": None, "via": None},
        "source_event_id": f"erp:{event_type}:{n}",
        "occurred_at": AT,
        "entity": {"type": event_type.split(".")[0], "key": f"erp:acct:{event_type}:{n}"},
        "identity": {"email": "jo@example.com", "quality": "email"},
        "data": DATA_BY_TYPE[event_type],
    }


def request(
    body: Any, content_type: str = "application/json", **headers: str
) -> WebhookRequestData:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookRequestData(raw, content_type, headers)


@pytest.fixture
def connection(db: Any) -> Connection:
    from tests.factories import make_workspace

    return make_connection(
        make_workspace("pw"),
        "patchworks",
        options={"source_system": "peoplevox", "source_account": "wh1"},
    )


@pytest.fixture
def fake() -> Any:
    server = FakePatchworks().start()
    yield server
    server.stop()


adapter = PatchworksAdapter()


def test_patchworks_has_its_own_adapter_and_canonical_keeps_its_own() -> None:
    assert isinstance(get_adapter("patchworks"), PatchworksAdapter)
    canonical = get_adapter("canonical")
    assert isinstance(canonical, CanonicalAdapter)
    assert not isinstance(canonical, PatchworksAdapter)


@pytest.mark.parametrize("event_type", sorted(DATA_BY_TYPE))
def test_every_canonical_event_type_passes_through_marked_via_patchworks(connection, event_type):
    items = adapter.parse_webhook(connection, request(canonical_event(event_type)))
    assert not items.errors
    [event] = items.events
    assert event["source"]["via"] == "patchworks"
    assert event["source"]["system"] == "erp"  # the original system stays the source
    assert schema_errors(event) == []


def test_a_list_and_a_backfill_envelope_are_taken_as_the_canonical_webhook_takes_them(connection):
    events = [canonical_event("order.created", 1), canonical_event("order.created", 2)]
    items = adapter.parse_webhook(connection, request({"events": events, "backfill": True}))
    assert items.backfill is True
    assert [e["source_event_id"] for e in items.events] == [
        "erp:order.created:1",
        "erp:order.created:2",
    ]
    assert all(e["source"]["via"] == "patchworks" for e in items.events)


def test_a_start_flow_payload_carrying_stringified_canonical_events_is_unwrapped(connection):
    inner = [canonical_event("refund.issued"), canonical_event("consent.changed")]
    items = adapter.parse_webhook(connection, request({"payload": json.dumps(inner)}))
    assert not items.errors
    assert [e["event_type"] for e in items.events] == ["refund.issued", "consent.changed"]
    assert items.positions == [0, 1]
    assert {e["source"]["via"] for e in items.events} == {"patchworks"}


def test_a_start_flow_payload_can_mark_a_backfill(connection):
    body = {"payload": json.dumps([canonical_event("order.created")]), "backfill": "true"}
    assert adapter.parse_webhook(connection, request(body)).backfill is True


def test_the_documented_start_flow_example_becomes_a_shipment_dispatched(connection):
    body = (PAYLOADS / "start-flow-request-standard-payload.json").read_bytes()
    items = adapter.parse_webhook(connection, request(body))
    assert not items.errors
    [event] = items.events
    assert schema_errors(event) == []
    assert event["event_type"] == "shipment.dispatched"
    assert event["source"] == {
        "system": "peoplevox",
        "account": "wh1",
        "channel": None,
        "via": "patchworks",
    }
    assert event["links"]["order_number"] == "#LMUK62388"
    data = event["data"]
    assert data["order_key"] == "peoplevox:wh1:order:#LMUK62388"
    assert data["lines"] == [
        {
            "line_key": "17070133346600",
            "sku": "42108803101",
            "sku_raw": "42108803101",
            "quantity": 3,
        }
    ]
    assert data["tracking_numbers"] == ["T042RA0001996850"]
    assert data["carrier"] == {"code": "EVRI", "name": "EVRI"}
    # no time in the body: the event says it is the time we received it
    assert event["occurred_at_quality"] == "received_time"
    assert event["source_event_id_kind"] == "derived"


def test_the_same_despatch_posted_twice_has_the_same_source_event_id(connection):
    body = (PAYLOADS / "start-flow-request-standard-payload.json").read_bytes()
    first = adapter.parse_webhook(connection, request(body)).events[0]
    again = adapter.parse_webhook(connection, request(body)).events[0]
    assert first["source_event_id"] == again["source_event_id"]
    assert first["event_id"] == again["event_id"]


def test_a_despatch_without_an_option_for_the_system_is_attributed_to_patchworks(db):
    from tests.factories import make_workspace

    bare = make_connection(make_workspace("bare"), "patchworks")
    body = (PAYLOADS / "start-flow-request-standard-payload.json").read_bytes()
    [event] = adapter.parse_webhook(bare, request(body)).events
    assert event["source"]["system"] == "patchworks"
    assert event["source"]["account"] == str(bare.pk)


def test_a_despatch_line_with_a_non_numeric_quantity_is_an_item_error(connection):
    inner = {"ORDER": "A1", "DATA": [{"SKU": "X", "QUANTITY": "three"}]}
    items = adapter.parse_webhook(connection, request({"payload": json.dumps(inner)}))
    assert items.events == []
    assert "QUANTITY" in items.errors[0].errors[0]["message"]


def test_a_despatch_with_no_lines_is_an_item_error(connection):
    inner = {"ORDER": "A1", "DATA": []}
    items = adapter.parse_webhook(connection, request({"payload": json.dumps(inner)}))
    assert items.events == [] and items.errors


def test_a_payload_that_is_not_json_text_is_an_error(connection):
    items = adapter.parse_webhook(connection, request({"payload": "ORDER=1&SKU=2"}))
    assert items.events == []
    assert items.errors[0].errors[0]["path"] == "payload"


def test_a_body_that_is_not_json_is_refused(connection):
    items = adapter.parse_webhook(connection, request(b"<xml/>", "text/xml"))
    assert items.events == [] and items.errors


def test_a_raw_source_payload_is_passed_on_for_the_schema_to_refuse(connection):
    items = adapter.parse_webhook(connection, request({"payload": json.dumps({"order": 1})}))
    [event] = items.events
    assert schema_errors(event)  # the engine answers it invalid, with field errors


# -- authenticity --------------------------------------------------------------------------


def test_the_webhook_token_as_a_bearer_header_finds_the_connection(connection):
    token = connection.rotate_webhook_token()
    assert connection_for_bearer({"Authorization": f"Bearer {token}"}) == connection
    assert connection_for_bearer({"authorization": f"bearer {token}"}) == connection


def test_a_wrong_missing_or_non_bearer_token_finds_nothing(connection):
    token = connection.rotate_webhook_token()
    assert connection_for_bearer({"Authorization": "Bearer nope"}) is None
    assert connection_for_bearer({}) is None
    assert connection_for_bearer({"Authorization": f"Basic {token}"}) is None


def test_a_bearer_token_of_another_kind_of_connection_is_not_a_patchworks_credential(db):
    from tests.factories import make_workspace

    other = make_connection(make_workspace("c"), "canonical")
    token = other.rotate_webhook_token()
    assert connection_for_bearer({"Authorization": f"Bearer {token}"}) is None


def test_the_documented_start_flow_example_is_accepted_by_the_webhook_url(connection):
    token = connection.rotate_webhook_token()
    body = (PAYLOADS / "start-flow-request-standard-payload.json").read_bytes()
    response = Client().post(f"/hooks/{token}/", data=body, content_type="application/json")
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    from monitoring.models import SourceEvent

    stored = SourceEvent.objects.get()
    assert stored.envelope["source"]["via"] == "patchworks"
    assert stored.event_type == "shipment.dispatched"


def test_bearer_guesses_count_with_url_guesses_towards_the_per_address_limit(connection):
    web = Client(REMOTE_ADDR="10.0.0.77")
    codes = [
        web.post("/hooks/", "{}", "application/json", HTTP_AUTHORIZATION=f"Bearer guess-{n}")
        for n in range(20)
    ] + [web.post(f"/hooks/guess-{n}/", "{}", "application/json") for n in range(11)]
    assert [c.status_code for c in codes] == [404] * 30 + [429]
    # A missing header is no guess: 401, not counted, and says how to authenticate.
    missing = Client(REMOTE_ADDR="10.0.0.78").post("/hooks/", "{}", "application/json")
    assert missing.status_code == 401 and missing["WWW-Authenticate"] == "Bearer"


# -- opt-outs written back -----------------------------------------------------------------


OPTED_OUT_AT = datetime(2026, 5, 2, 9, 30, tzinfo=UTC)


def write_back(connection: Connection, fake: FakePatchworks, **credentials: str) -> None:
    connection.options = {"opt_out_webhook_url": f"{fake.url}/api/v1/acme/42"}
    connection.credentials = credentials
    connection.save()
    connection.refresh_from_db()
    adapter.write_back_opt_out(connection, "jo@example.com", OPTED_OUT_AT)


def test_an_opt_out_is_posted_to_the_flow_webhook_with_its_signature(connection, fake):
    write_back(connection, fake, opt_out_signature="s3cret", opt_out_bearer_token="tok")
    [sent] = fake.received
    assert sent.path == "/api/v1/acme/42"
    assert sent.query == {"patchworks_signature": ["s3cret"]}
    assert sent.headers["Authorization"] == "Bearer tok"
    body = sent.json()
    assert body["email"] == "jo@example.com"
    assert body["status"] == "unsubscribed" and body["channel"] == "email"
    assert body["opted_out_at"] == "2026-05-02T09:30:00Z"
    assert body["idempotency_key"]


def test_the_same_opt_out_sent_twice_carries_the_same_idempotency_key(connection, fake):
    write_back(connection, fake)
    write_back(connection, fake)
    assert fake.received[0].json()["idempotency_key"] == fake.received[1].json()["idempotency_key"]


@pytest.mark.parametrize(
    ("status", "permanent"), [(401, True), (404, True), (429, False), (500, False), (503, False)]
)
def test_a_refused_opt_out_says_whether_retrying_can_help(connection, fake, status, permanent):
    fake.script.append((status, b'{"message": "no"}'))
    with pytest.raises(SourceError) as caught:
        write_back(connection, fake, opt_out_signature="s3cret")
    assert caught.value.permanent is permanent
    assert "s3cret" not in caught.value.message


def test_an_unreachable_flow_webhook_is_a_transient_error(connection, fake):
    fake.stop()
    with pytest.raises(SourceError) as caught:
        write_back(connection, fake, opt_out_signature="s3cret")
    assert caught.value.permanent is False
    assert "s3cret" not in caught.value.message
    fake.start()  # the fixture stops it again


def test_no_opt_out_webhook_is_a_permanent_error(connection):
    with pytest.raises(SourceError) as caught:
        adapter.write_back_opt_out(connection, "jo@example.com", OPTED_OUT_AT)
    assert caught.value.permanent is True


def test_testing_the_connection_never_starts_the_flow(connection, fake):
    connection.options = {"opt_out_webhook_url": f"{fake.url}/api/v1/acme/42"}
    assert "not called" in adapter.test_connection(connection)
    assert fake.received == []
