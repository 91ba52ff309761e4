"""`make demo`'s recorded OrderWise, Stokly and Patchworks (monitoring/demo.py's `DemoSystem`s):
each system's recorded API served as the demo serves it, its flow polled by the engine's poller,
its recorded webhook requests posted to the flow's webhook, and the outcome read back from the
DotDigital sandbox. What the demo shows is what these tests check: and the replay happens now, in
the seconds before the demo's present, so no flow reports lag."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest

from connectors.sources.orderwise import api as orderwise
from connectors.sources.stokly import api as stokly
from exceptions_inbox.models import Occurrence
from monitoring.demo import DemoSystem, demo_system, serve_api
from monitoring.models import Flow, SourceEvent
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from monitoring.pipeline.sources import poll_flow
from tests.connectors.sources.replay_support import assert_replayed_now, occurred, present
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
__all__ = ["present"]  # the fixture


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    orderwise._TOKENS.clear()
    stokly._TOKENS.clear()
    yield
    orderwise._TOKENS.clear()
    stokly._TOKENS.clear()


def replay(engine: Engine, system: DemoSystem) -> Flow:
    """What seed_demo and the demo-replay process do for one system, then the engine's pump."""
    server = None
    base_url = ""
    if system.api is not None:
        server = serve_api(system, 0)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        source = make_connection(
            engine.workspace,
            system.kind,
            name=system.name,
            credentials=system.credentials(),
            options=system.options(base_url),
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
        if system.polls:
            assert poll_flow(flow.pk, max_pages=50) > 0
        for recorded in system.requests():
            url = f"/hooks/{token}/" + (
                f"?{recorded.query_string}" if recorded.query_string else ""
            )
            answer = engine.web.generic(
                "POST", url, recorded.body, content_type=recorded.content_type
            )
            assert answer.status_code == 202, (recorded.label, answer.content)
        engine.pump()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return flow


def test_the_recorded_orderwise_demo_reaches_dotdigital(engine: Engine, present: datetime):
    flow = replay(engine, demo_system("orderwise"))

    jo = engine.contact("jo.orderwise@example.com")
    assert jo is not None
    order = engine.records("jo.orderwise@example.com")["SO-D1001"]
    assert Decimal(str(order["GrandTotal"])) == Decimal("56.97")
    assert order["Dispatched"] is True and order["Carrier"] == "DPD"
    assert Decimal(str(order["RefundedTotal"])) == Decimal("17.99")  # the credit note
    # The legacy push completed the shared account's web order and dispatched it.
    ann = engine.records("ann.web@example.com")["SO-D1002"]
    assert ann["Status"] == "closed" and ann["Carrier"] == "Royal Mail"
    assert engine.contact("webshop@northwind.example") is None  # the shared account: nobody
    # The order in a status the map lacks: in DotDigital, but opened a warning in the inbox.
    assert "SO-D1003" in engine.records("bo.web@example.com")
    assert Occurrence.objects.get(group__kind="source_warning").order_number == "SO-D1003"
    assert not SourceEvent.objects.filter(flow=flow, state__in=("failed", "held")).exists()
    assert_replayed_now(flow, present)
    assert (
        occurred(flow, "order.created")
        < occurred(flow, "shipment.dispatched")
        < occurred(flow, "refund.issued")
    )


def test_the_recorded_stokly_demo_reaches_dotdigital(engine: Engine, present: datetime):
    flow = replay(engine, demo_system("stokly"))

    order = engine.records("sam.stokly@example.com")["5001"]
    assert Decimal(str(order["GrandTotal"])) == Decimal("56.97")  # floats, to the penny
    assert order["Financial"] == "paid"
    assert engine.records("lee.guest@example.com")["5002"]["Status"] == "open"
    assert not SourceEvent.objects.filter(flow=flow, state__in=("failed", "held")).exists()
    assert_replayed_now(flow, present)
    assert occurred(flow, "customer.upserted") < occurred(flow, "order.created")


def test_the_recorded_patchworks_demo_reaches_dotdigital(engine: Engine, present: datetime):
    flow = replay(engine, demo_system("patchworks"))

    record = engine.records("lm.patchworks@example.com")["#LMUK62388"]
    assert Decimal(str(record["GrandTotal"])) == Decimal("27.95")
    assert record["Dispatched"] is True and record["TrackingNumbers"] == ["T042RA0001996850"]
    events = SourceEvent.objects.filter(flow=flow)
    assert {e.envelope["source"]["via"] for e in events} == {"patchworks"}
    assert not events.exclude(state="delivered").exists()
    assert_replayed_now(flow, present)
    assert occurred(flow, "order.created") < occurred(flow, "shipment.dispatched")
