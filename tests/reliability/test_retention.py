"""Retention: payloads past their period are redacted in batches; timelines stay readable."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from monitoring.models import SourceEvent, WebhookRequest
from monitoring.privacy.retention import sweep_retention
from tests.monitoring.engine import Source, stage

State = SourceEvent.State


@pytest.fixture
def shop(world):
    return Source(world.workspace, "shop")


def post_orders(shop, numbers, *, age_days=0, state=State.DELIVERED):
    response = shop.post([shop.order(n, email=f"p{n}@example.com") for n in numbers])
    assert response.status_code == 202
    request_id = response.json()["request_id"]
    stage()
    then = timezone.now() - timedelta(days=age_days)
    WebhookRequest.objects.filter(pk=request_id).update(received_at=then)
    SourceEvent.objects.filter(request_id=request_id).update(received_at=then, state=state)
    return request_id


def test_the_sweeper_redacts_old_payloads_and_keeps_the_timeline(shop, settings):
    settings.PAYLOAD_RETENTION_DAYS = 30
    old = post_orders(shop, ["1", "2"], age_days=31)
    new = post_orders(shop, ["3"], age_days=1)
    before = {e.pk: e for e in SourceEvent.objects.all()}

    report = sweep_retention()

    assert (report.requests, report.events) == (1, 2)
    request = WebhookRequest.objects.get(pk=old)
    assert bytes(request.body) == b""
    assert request.headers["redacted"] == "retention"
    assert request.size > 0  # what arrived is still told
    for event in SourceEvent.objects.filter(request_id=old):
        assert event.envelope["redacted"] == "retention"
        assert "identity" not in event.envelope and "data" not in event.envelope
        assert event.envelope["event_type"] == "order.created"
        was = before[event.pk]
        assert (event.state, event.event_type, event.entity_key, event.occurred_at) == (
            was.state,
            was.event_type,
            was.entity_key,
            was.occurred_at,
        )
    assert bytes(WebhookRequest.objects.get(pk=new).body) != b""
    assert "identity" in SourceEvent.objects.get(request_id=new).envelope


def test_unsettled_events_keep_their_payload_until_they_are_delivered_or_skipped(shop):
    held = post_orders(shop, ["1"], age_days=90, state=State.READY)
    failed = post_orders(shop, ["2"], age_days=90, state=State.FAILED)
    report = sweep_retention()
    assert report.total == 0
    for request_id in (held, failed):
        assert bytes(WebhookRequest.objects.get(pk=request_id).body) != b""
        assert "data" in SourceEvent.objects.get(request_id=request_id).envelope


def test_it_sweeps_in_bounded_batches_and_a_second_sweep_finds_nothing(shop):
    for n in range(7):
        post_orders(shop, [str(n)], age_days=40)
    report = sweep_retention(batch_size=3)
    assert (report.requests, report.events) == (7, 7)
    assert report.batches == 3 + 3  # 3+3+1 events, 3+3+1 requests
    assert sweep_retention(batch_size=3).total == 0


def test_the_command_sweeps_with_its_own_period(shop):
    post_orders(shop, ["1"], age_days=5)
    call_command("sweep_retention", "--days", "3")
    assert SourceEvent.objects.get().envelope["redacted"] == "retention"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL")
def test_two_sweepers_at_once_redact_each_row_once(world):
    shop = Source(world.workspace, "shop")
    for n in range(40):
        post_orders(shop, [str(n)], age_days=40)
    reports = []

    def sweep() -> None:
        try:
            reports.append(sweep_retention(batch_size=5))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.events for r in reports) == 40
    assert sum(r.requests for r in reports) == 40
    assert not SourceEvent.objects.exclude(envelope__has_key="redacted").exists()


def test_a_flows_own_retention_overrides_the_default_both_ways(world, settings):
    settings.PAYLOAD_RETENTION_DAYS = 30
    short = Source(world.workspace, "short", payload_retention_days=7)
    long = Source(world.workspace, "long", payload_retention_days=60)
    default = Source(world.workspace, "plain")
    short_request = post_orders(short, ["S1"], age_days=10)
    long_request = post_orders(long, ["L1"], age_days=40)
    default_request = post_orders(default, ["D1"], age_days=10)

    report = sweep_retention()

    assert (report.events, report.requests) == (1, 1)
    assert SourceEvent.objects.get(request_id=short_request).envelope["redacted"] == "retention"
    assert bytes(WebhookRequest.objects.get(pk=short_request).body) == b""
    for kept in (long_request, default_request):  # 40 < 60 days; 10 < 30 days
        assert "data" in SourceEvent.objects.get(request_id=kept).envelope
        assert bytes(WebhookRequest.objects.get(pk=kept).body) != b""
    assert report.cutoff is not None  # the default period's


def test_a_request_body_goes_with_the_shortest_period_of_its_connections_flows(world, settings):
    from monitoring.models import Flow

    settings.PAYLOAD_RETENTION_DAYS = 30
    shop = Source(world.workspace, "shop", payload_retention_days=7)
    # A second flow of the same source connection, with a shorter period, taking only stock.
    Flow.objects.create(
        workspace=world.workspace,
        name="shop stock",
        source=shop.connection,
        event_types=["stock.changed"],
        payload_retention_days=3,
    )
    request_id = post_orders(shop, ["1"], age_days=5)

    report = sweep_retention()

    # The body may hold the stock flow's events too: it goes after 3 days; the order event's
    # own flow keeps it for 7.
    assert (report.requests, report.events) == (1, 0)
    assert bytes(WebhookRequest.objects.get(pk=request_id).body) == b""
    assert "data" in SourceEvent.objects.get(request_id=request_id).envelope
