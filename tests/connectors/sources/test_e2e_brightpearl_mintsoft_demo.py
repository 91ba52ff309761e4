"""`make demo`'s recorded Brightpearl and Mintsoft (monitoring/demo.py's `DemoSystem`s): each
system's recorded API served as the demo serves it, its flow polled (Mintsoft) or its
notifications fetched (Brightpearl) by the engine, its recorded webhook requests posted to the
flow's webhook, and the outcome read back from the DotDigital sandbox. What the demo shows is
what these tests check: and the replay happens now, its years-old recorded times moved to the
present in their order, so neither flow reports lag."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from monitoring.demo import DemoSystem, demo_system, serve_api
from monitoring.models import Flow, SourceEvent, SourceNotification
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.pipeline.sources import poll_flow, run_fetch
from tests.connectors.sources.replay_support import assert_replayed_now, occurred, present
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
__all__ = ["present"]  # the fixture


def replay(engine: Engine, system: DemoSystem) -> Flow:
    """What seed_demo, the system's API process and the demo-replay process do for one system,
    then the engine's fetch and pump."""
    assert system.api is not None
    server = serve_api(system, 0)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        source = make_connection(
            engine.workspace,
            system.kind,
            name=system.name,
            credentials=system.credentials(),
            options=system.options(f"http://127.0.0.1:{server.server_address[1]}"),
        )
        token = source.rotate_webhook_token()
        flow = Flow.objects.create(
            workspace=engine.workspace,
            name=f"{system.name} → DotDigital",
            source=source,
            destination=engine.destination,
            join_key=system.join_key,
        )
        install_defaults(flow)
        mark_backfill_complete(flow, by="test")
        if system.polls and system.poll_first:
            assert poll_flow(flow.pk) > 0
        for recorded in system.requests():
            url = f"/hooks/{token}/" + (
                f"?{recorded.query_string}" if recorded.query_string else ""
            )
            answer = engine.web.generic(
                "POST", url, recorded.body, content_type=recorded.content_type
            )
            assert answer.status_code == 202, (recorded.label, answer.content)
        if system.polls and not system.poll_first:
            assert poll_flow(flow.pk) > 0
        run_fetch()
        engine.pump()
    finally:
        server.shutdown()
        server.server_close()
    return flow


def test_the_recorded_brightpearl_demo_reaches_dotdigital(engine: Engine, present: datetime):
    flow = replay(engine, demo_system("brightpearl"))

    assert set(SourceNotification.objects.values_list("state", flat=True)) == {"done"}
    contact = engine.contact("test@gmail.com")
    assert contact is not None
    assert contact["channelProperties"]["email"]["status"] == "subscribed"
    order = engine.records("demo@test.com")["1"]
    assert (order["GrandTotal"], order["Currency"], order["Status"]) == (10, "GBP", "closed")
    assert order["Dispatched"] is True
    assert order["Refunded"] is True
    delivered = set(
        SourceEvent.objects.filter(state="delivered").values_list("event_type", flat=True)
    )
    assert delivered >= {
        "customer.upserted",
        "consent.changed",
        "order.created",
        "order.status_changed",
        "shipment.dispatched",
        "refund.issued",
        "stock.changed",
    }
    assert_replayed_now(flow, present)
    # In the recorded order: the sale (2020-03-31), its credit (2020-04-02), the contact's
    # change (2025-08-28), the goods-out note shipped (2025-11-04).
    assert (
        occurred(flow, "order.created")
        < occurred(flow, "refund.issued")
        < occurred(flow, "customer.upserted")
        < occurred(flow, "shipment.dispatched")
    )


def test_the_recorded_mintsoft_demo_reaches_dotdigital(engine: Engine, present: datetime):
    flow = replay(engine, demo_system("mintsoft"))

    order = engine.records("test.customer@example.com")["TEST CLIENT-1917-Copy-Copy"]
    assert order["Dispatched"] is True
    assert order["DeliveryStatus"] == "delivered"
    delivered = set(
        SourceEvent.objects.filter(state="delivered").values_list("event_type", flat=True)
    )
    assert delivered >= {
        "order.created",
        "order.status_changed",
        "shipment.dispatched",
        "shipment.carrier_scanned",
        "stock.changed",
    }
    # The captured orders carry no email: what the demo's inbox shows for Mintsoft.
    assert SourceEvent.objects.filter(state="failed", failed_kind="contact_without_email").exists()
    assert_replayed_now(flow, present)
    # In the recorded order: placed, despatched, then delivered.
    assert (
        occurred(flow, "order.created")
        < occurred(flow, "shipment.dispatched")
        < occurred(flow, "shipment.carrier_scanned")
    )
