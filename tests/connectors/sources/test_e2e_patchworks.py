"""Patchworks end to end: a process flow relaying a WMS/ERP posts every canonical event type (as
canonical events, inside Patchworks' start-flow `payload`, to the token URL or with a bearer
token) through HTTP; the engine stages and delivers them to the DotDigital sandbox, read back
through DotDigital's API. And the opt-out round trip: a suppression made in DotDigital is pulled,
then POSTed by the engine's write-back to a fake Patchworks trigger webhook.

Also both authentication routes at the HTTP boundary: a wrong or missing token answers 404 / 401
and stores nothing (design.md's webhook table).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitoring.models import Flow, OptOutWriteBack, SourceEvent, WebhookRequest
from monitoring.pipeline.consent import pull_suppressions
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.watch import reconcile
from tests.connectors.sources.fakes.patchworks import FakePatchworks
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine, event, iso

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RELAYED = ("peoplevox", "wh1")  # the system the Patchworks flow reads from
EMAIL = "jo@example.com"
SIGNATURE = "pw-signature-123"
START_FLOW = Path(__file__).resolve().parent / "payloads" / "patchworks"
ORDER_KEY = "peoplevox:wh1:order:PW-1"


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def order_body(total: str, revision: str | None = None) -> dict[str, Any]:
    line = {"line_key": "PW-1-1", "sku": "AB-1", "sku_raw": "AB-1", "name": "Anorak",
            "quantity": 1, "unit_price": money(total), "line_total": money(total)}  # fmt: skip
    body = {
        "order_key": ORDER_KEY, "order_number": "PW-1", "channel_order_ref": "#W1",
        "placed_at": iso(datetime.now(UTC) - timedelta(hours=1)), "currency": "GBP",
        "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "pending"},
        "lines": [line], "tax_inclusive": True, "is_guest": False,
        "totals": {"subtotal": money(total), "shipping": money("0.00"), "grand_total": money(total),
                   "tax_inclusive": True},
    }  # fmt: skip
    if revision:
        body["revision"] = revision
    return body


def relayed(event_type: str, entity: str, n: str, data: dict[str, Any], at: datetime,
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    return event(RELAYED, event_type, entity, n, data, at=at, **extra)


def every_event_type(now: datetime) -> list[list[dict[str, Any]]]:
    """Every canonical event type, in the batches a relaying flow would post them."""
    t = [now - timedelta(minutes=30 - i) for i in range(12)]
    person = {"email": EMAIL, "customer_id": "C1"}
    order = {"links": {"order_number": "PW-1"}, "source_ref": "PW-1"}
    shipment_key = "peoplevox:wh1:shipment:PW-1-S1"
    return [
        [
            relayed("product.updated", "product:AB-1", "product:AB-1:1",
                    {"sku": "AB-1", "sku_raw": "AB-1", "product_key": "peoplevox:wh1:product:AB-1",
                     "status": "active", "name": "Anorak", "price": money("12.50")}, t[0]),
            relayed("stock.changed", "stock:AB-1@main", "stock:AB-1:1",
                    {"sku": "AB-1", "location": {"key": "main"}, "as_of": iso(t[0]), "mode": "snapshot",
                     "quantities": {"on_hand": 5, "saleable": 4}}, t[0]),
            relayed("customer.upserted", "customer:C1", "customer:C1:1",
                    {"customer_key": "peoplevox:wh1:customer:C1", "source_updated_at": iso(t[1]),
                     "first_name": "Jo", "last_name": "Bloggs"}, t[1], **person),
            relayed("consent.changed", "consent:C1:email", "consent:C1:1",
                    {"channel": "email", "status": "subscribed", "opt_in_level": "single",
                     "consent_at": iso(t[2]), "consent_source": "checkout"}, t[2], **person),
        ],
        [
            relayed("order.created", "order:PW-1", "order:PW-1:created", order_body("10.00"),
                    t[3], **person, **order),
            relayed("order.updated", "order:PW-1", "order:PW-1:updated:2",
                    order_body("12.50", revision=iso(t[4])), t[4], **person, **order),
            relayed("order.status_changed", "order:PW-1", "order:PW-1:status:paid",
                    {"order_key": ORDER_KEY, "to": {"financial": "paid"}, "from": None,
                     "source_status_raw": "Paid"}, t[5], **person, **order),
        ],
        [
            relayed("shipment.dispatched", "shipment:PW-1-S1", "shipment:PW-1-S1:dispatched",
                    {"shipment_key": shipment_key, "order_key": ORDER_KEY, "dispatched_at": iso(t[6]),
                     "lines": [{"sku": "AB-1", "quantity": 1}],
                     "carrier": {"code": "dpd", "name": "DPD"}}, t[6], **order),
            relayed("shipment.tracking_updated", "shipment:PW-1-S1", "shipment:PW-1-S1:tracking",
                    {"shipment_key": shipment_key, "tracking_numbers": ["DPD123"]}, t[7], **order),
            relayed("shipment.carrier_scanned", "shipment:PW-1-S1", "shipment:PW-1-S1:scan",
                    {"shipment_key": shipment_key, "scan_status": "delivered",
                     "scanned_at": iso(t[8])}, t[8], **order),
            relayed("refund.issued", "refund:PW-1-R1", "refund:PW-1-R1",
                    {"refund_key": "peoplevox:wh1:refund:PW-1-R1", "order_key": ORDER_KEY,
                     "refunded_at": iso(t[9]), "amount": money("4.50")}, t[9], **order),
            relayed("return.received", "return:PW-1-RT1", "return:PW-1-RT1",
                    {"return_key": "peoplevox:wh1:return:PW-1-RT1", "order_key": ORDER_KEY,
                     "received_at": iso(t[10]), "lines": [{"sku": "AB-1", "quantity": 1}]},
                    t[10], **order),
        ],
    ]  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakePatchworks]:
    server = FakePatchworks().start()
    yield server
    server.stop()


@pytest.fixture
def patchworks(engine: Engine, fake: FakePatchworks) -> tuple[Flow, str]:
    connection = make_connection(
        engine.workspace,
        "patchworks",
        name="Patchworks",
        options={"opt_out_webhook_url": f"{fake.url}/api/v1/acme/optouts"},
        credentials={"opt_out_signature": SIGNATURE},
    )
    token = connection.rotate_webhook_token()
    flow = Flow.objects.create(
        workspace=engine.workspace,
        name="Patchworks → DotDigital",
        source=connection,
        destination=engine.destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
        masters_products=True,
    )
    install_defaults(flow)
    mark_backfill_complete(flow, by="test")
    return flow, token


def post(engine: Engine, path: str, body: Any, **headers: str) -> Any:
    return engine.web.post(path, data=json.dumps(body), content_type="application/json", **headers)


def test_every_canonical_event_type_relayed_by_patchworks_reaches_dotdigital(
    engine: Engine, patchworks: tuple[Flow, str]
):
    flow, token = patchworks
    products_and_people, orders, after_sale = every_event_type(datetime.now(UTC))
    # Three ways a flow may post: canonical events to the token URL, the start-flow envelope
    # (the body stringified in `payload`), and the bearer route with no token in the URL.
    answer = post(engine, f"/hooks/{token}/", {"events": products_and_people})
    assert answer.status_code == 202, answer.content
    engine.pump()
    answer = post(engine, f"/hooks/{token}/", {"payload": json.dumps({"events": orders})})
    assert answer.status_code == 202, answer.content
    engine.pump()
    answer = post(engine, "/hooks/", after_sale, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 202, answer.content
    assert [r["status"] for r in answer.json()["results"]] == ["accepted"] * 5
    engine.pump()

    events = SourceEvent.objects.filter(flow=flow)
    assert sorted(events.values_list("event_type", flat=True)) == sorted(
        e["event_type"] for batch in every_event_type(datetime.now(UTC)) for e in batch
    )
    assert len({e.event_type for e in events}) == 12  # every canonical event type
    assert all(e.envelope["source"]["via"] == "patchworks" for e in events)
    assert not events.exclude(state="delivered").exists(), [
        (e.event_type, e.state, e.reason) for e in events.exclude(state="delivered")
    ]

    contact = engine.contact(EMAIL)
    assert contact is not None
    assert contact["dataFields"]["FIRSTNAME"] == "Jo"
    assert contact["channelProperties"]["email"]["status"] == "subscribed"  # consent.changed
    assert Decimal(str(contact["dataFields"]["LTV"])) == Decimal("8.00")  # 12.50 − 4.50
    assert contact["dataFields"]["REFUNDED"] is True
    record = engine.records(EMAIL)["PW-1"]
    assert Decimal(str(record["GrandTotal"])) == Decimal("12.50")  # order.updated's revision
    assert record["Financial"] == "paid"  # order.status_changed
    assert record["Dispatched"] is True and record["Carrier"] == "DPD"
    assert record["TrackingNumbers"] == ["DPD123"]  # shipment.tracking_updated
    assert record["DeliveryStatus"] == "delivered"  # shipment.carrier_scanned
    assert Decimal(str(record["RefundedTotal"])) == Decimal("4.50")
    products = account(engine, "Products")
    assert products["AB-1"]["Name"] == "Anorak"
    assert account(engine, "Stock")["AB-1"]["Saleable"] == 4


def test_the_documented_start_flow_despatch_joins_the_order_it_names(
    engine: Engine, patchworks: tuple[Flow, str]
):
    flow, token = patchworks
    now = datetime.now(UTC)
    order = relayed(
        "order.created", "order:LM", "order:LM:created",
        {**order_body("30.00"), "order_key": "peoplevox:wh1:order:#LMUK62388",
         "order_number": "#LMUK62388",
         "lines": [{"line_key": "1", "sku": "42108803101", "quantity": 3,
                    "line_total": money("30.00")}]},
        now - timedelta(minutes=5), email="lm@example.com", customer_id="C9",
    )  # fmt: skip
    assert post(engine, f"/hooks/{token}/", [order]).status_code == 202
    # Patchworks' own example, verbatim: {"payload": "{\"ORDER\": \"#LMUK62388\", ...}"}
    body = (START_FLOW / "start-flow-request-standard-payload.json").read_bytes()
    answer = engine.web.post(
        "/hooks/", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert answer.status_code == 202, answer.content
    engine.pump()

    despatch = SourceEvent.objects.get(flow=flow, event_type="shipment.dispatched")
    assert despatch.state == "delivered", despatch.reason
    record = engine.records("lm@example.com")["#LMUK62388"]
    assert record["Dispatched"] is True and record["Carrier"] == "EVRI"
    assert record["TrackingNumbers"] == ["T042RA0001996850"]


def test_an_opt_out_made_in_dotdigital_is_posted_to_the_patchworks_webhook(
    engine: Engine, patchworks: tuple[Flow, str], fake: FakePatchworks
):
    flow, token = patchworks
    products_and_people, _, _ = every_event_type(datetime.now(UTC))
    post(engine, f"/hooks/{token}/", {"events": products_and_people})
    engine.pump()
    # The contact unsubscribes in DotDigital after the consent the flow sent.
    removed = iso(datetime.now(UTC).replace(microsecond=0))
    engine.sandbox.plant(
        suppressions=[{"email": EMAIL, "reason": "Unsubscribed", "dateRemoved": removed}]
    )
    pull_suppressions(engine.destination)

    assert reconcile.round_trip(flow) == (1, 1)
    assert reconcile.round_trip(flow) == (0, 0)  # once

    [call] = fake.received
    assert call.path == "/api/v1/acme/optouts"
    assert call.query == {"patchworks_signature": [SIGNATURE]}
    body = call.json()
    assert body["email"] == EMAIL and body["status"] == "unsubscribed"
    assert body["opted_out_at"] == removed and body["origin"] == "dotdigital"
    row = OptOutWriteBack.objects.get(flow=flow)
    assert row.state == "written" and row.written_at is not None


def test_a_refused_opt_out_write_back_retries_then_opens_consent_sync_failed(
    engine: Engine, patchworks: tuple[Flow, str], fake: FakePatchworks
):
    flow, token = patchworks
    products_and_people, _, _ = every_event_type(datetime.now(UTC))
    post(engine, f"/hooks/{token}/", {"events": products_and_people})
    engine.pump()
    engine.sandbox.plant(suppressions=[{"email": EMAIL, "reason": "Unsubscribed"}])
    pull_suppressions(engine.destination)
    fake.script = [(503, b"{}"), (401, b'{"message": "Invalid signature"}')]

    reconcile.round_trip(flow)
    row = OptOutWriteBack.objects.get(flow=flow)
    assert row.state == "pending" and row.attempts == 1  # 503: transient, retried later
    OptOutWriteBack.objects.update(next_attempt_at=datetime.now(UTC))
    reconcile.round_trip(flow)
    row.refresh_from_db()
    assert row.state == "failed"  # 401: permanent
    assert SIGNATURE not in row.error
    from exceptions_inbox.models import Occurrence

    assert Occurrence.objects.get(group__kind="consent_sync_failed").email == EMAIL


# -- the two authentication routes, through HTTP ------------------------------------------------


def test_the_bearer_route_without_or_with_a_malformed_header_answers_401_and_stores_nothing(
    engine: Engine, patchworks: tuple[Flow, str]
):
    flow, token = patchworks
    before = WebhookRequest.objects.count()
    body = {"events": every_event_type(datetime.now(UTC))[0]}
    for headers in ({}, {"HTTP_AUTHORIZATION": token}, {"HTTP_AUTHORIZATION": f"Basic {token}"},
                    {"HTTP_AUTHORIZATION": "Bearer "}):  # fmt: skip
        answer = post(engine, "/hooks/", body, **headers)
        assert answer.status_code == 401, headers
        assert answer["WWW-Authenticate"] == "Bearer"
    assert WebhookRequest.objects.count() == before
    assert not SourceEvent.objects.filter(flow=flow).exists()


def test_a_wrong_token_on_either_route_answers_404_and_stores_nothing(
    engine: Engine, patchworks: tuple[Flow, str]
):
    flow, token = patchworks
    before = WebhookRequest.objects.count()
    body = {"events": every_event_type(datetime.now(UTC))[0]}
    assert post(engine, "/hooks/not-a-token/", body).status_code == 404
    assert post(engine, "/hooks/", body, HTTP_AUTHORIZATION="Bearer not-a-token").status_code == 404
    # Another kind's valid token is not a Patchworks credential on the bearer route.
    assert (
        post(
            engine, "/hooks/", body, HTTP_AUTHORIZATION=f"Bearer {engine.tokens['erp']}"
        ).status_code
        == 404
    )
    # The token in the URL *and* a bearer header: the URL route ignores headers, as before.
    assert WebhookRequest.objects.count() == before
    assert not SourceEvent.objects.exists()


def test_both_routes_store_the_body_once_per_request_and_deduplicate_the_events(
    engine: Engine, patchworks: tuple[Flow, str]
):
    flow, token = patchworks
    body = {"events": every_event_type(datetime.now(UTC))[0]}
    first = post(engine, f"/hooks/{token}/", body)
    again = post(engine, "/hooks/", body, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert first.status_code == again.status_code == 202
    assert {r["status"] for r in first.json()["results"]} == {"accepted"}
    assert {r["status"] for r in again.json()["results"]} == {"duplicate"}
    stored = WebhookRequest.objects.filter(connection=flow.source)
    assert stored.count() == 2
    assert all(token not in json.dumps(r.headers) for r in stored)  # the secret is not kept
    assert SourceEvent.objects.filter(flow=flow).count() == 4


def test_get_on_the_bearer_route_is_not_allowed(engine: Engine, patchworks: tuple[Flow, str]):
    _, token = patchworks
    assert engine.web.get("/hooks/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 405


def account(engine: Engine, collection: str) -> dict[str, dict[str, Any]]:
    response = engine.sandbox.api.get(f"{engine.sandbox.url}/insightData/v3/account/{collection}")
    assert response.status_code == 200, response.text
    return {item["key"]: item["json"] for item in response.json()["_items"]}
