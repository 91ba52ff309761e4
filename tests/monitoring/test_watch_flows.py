"""The flows page and the event timeline: per-flow health from the event rows, live refresh,
charts drawn as SVG, and one timeline per business key."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from monitoring.models import SourceEvent
from monitoring.watch import flow_health
from monitoring.watch.flow_health import BUCKETS, percentile
from tests.monitoring.watch_support import make_event, make_flow

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_for(world):
    def login(user):
        c = Client()
        c.force_login(user)
        return c

    return login


def test_percentile_reads_the_histogram_bucket_the_rank_falls_in():
    # 10 events: 9 within 1 to 2 s, 1 within 30 to 60 s (cumulative counts per bound).
    assert BUCKETS[:9] == (0.5, 1, 2, 3, 5, 10, 15, 30, 60)
    counts = [0, 0, 9, 9, 9, 9, 9, 9, *([10] * (len(BUCKETS) - 8))]
    assert percentile(counts, 10, 0.5) == pytest.approx(1 + 1 * (5 / 9))
    assert 30 < percentile(counts, 10, 0.95) <= 60
    assert percentile([0] * len(BUCKETS), 0, 0.5) is None


def test_it_reports_each_flows_health(world):
    flow = make_flow(world.workspace, name="Mintsoft → DotDigital")
    with time_machine.travel("2025-03-04 10:00:00Z", tick=False):
        for _ in range(19):
            make_event(flow, source_delay=1, queue=1, dotdigital=1)
        make_event(flow, source_delay=10, queue=400, dotdigital=5)  # one slow event
        make_event(flow, state=SourceEvent.State.FAILED)
        old = make_event(flow, state=SourceEvent.State.RECEIVED)
        SourceEvent.objects.filter(pk=old.pk).update(
            received_at=timezone.now() - timedelta(minutes=7)
        )
        make_event(flow, state=SourceEvent.State.HELD)
        [h] = flow_health.flow_health([flow])
    assert h.delivered_hour == 20
    assert h.p50_hour is not None and h.p50_hour <= 5
    assert h.p95_hour is not None and h.p95_hour <= 15  # the slow one is beyond the 95th rank
    assert h.backlog == 1 and h.held == 1
    assert h.oldest_age == pytest.approx(420, abs=1)
    assert h.failed_day == 1 and h.received_day == 23
    assert h.state == "healthy"


def test_a_flow_over_its_threshold_is_lagging_and_a_switched_off_one_paused(world):
    lagging = make_flow(world.workspace, lag_threshold_seconds=60)
    paused = make_flow(world.workspace, is_active=False)
    for _ in range(5):
        make_event(lagging, queue=600)
    make_event(paused)
    states = {h.flow.pk: h.state for h in flow_health.flow_health([lagging, paused])}
    assert states == {lagging.pk: "lagging", paused.pk: "paused"}


def test_history_posted_as_a_backfill_is_not_counted_as_lag(world):
    flow = make_flow(world.workspace, lag_threshold_seconds=60)
    for _ in range(5):
        make_event(flow)
    for _ in range(20):  # last year's orders, loaded today
        make_event(flow, source_delay=365 * 86400, is_backfill=True)
    [h] = flow_health.flow_health([flow])
    assert h.delivered_hour == 5
    assert h.p95_hour is not None and h.p95_hour <= 15
    assert h.state == "healthy"


def test_a_backfill_never_moves_a_flows_latency_or_backlog_and_is_shown_apart(world, client_for):
    flow = make_flow(world.workspace, name="Brightpearl → DotDigital", lag_threshold_seconds=60)
    for _ in range(5):
        make_event(flow, source_delay=1, queue=1, dotdigital=1)
    for _ in range(7):  # history of 2020, delivered today
        make_event(flow, source_delay=5 * 365 * 86400, queue=900, is_backfill=True)
    for _ in range(4):  # more of it queued in the bulk lane for two hours
        waiting = make_event(flow, state=SourceEvent.State.RECEIVED, is_backfill=True)
        SourceEvent.objects.filter(pk=waiting.pk).update(
            received_at=timezone.now() - timedelta(hours=2)
        )
    [h] = flow_health.flow_health([flow])
    assert h.delivered_hour == h.delivered_day == 5
    assert h.p95_hour is not None and h.p95_hour <= 5
    assert h.p95_day is not None and h.p95_day <= 5
    assert h.backlog == 0 and h.oldest_age is None
    assert (h.backfill_day, h.backfill_waiting) == (11, 4)
    assert h.state == "healthy"
    assert all(bar.total <= 5 for bar in flow_health.latency_bars(flow))

    body = client_for(world.member).get(reverse("monitoring:flows", args=["acme"])).content
    row = body.decode().split("Brightpearl → DotDigital", 1)[1].split("</tr>", 1)[0]
    throughput, _, backlog = row.split('<td class="num">')[1:4]
    assert throughput.startswith("5/h") and "+11 backfill</div>" in throughput
    assert backlog.startswith("0") and "+4 backfill</div>" in backlog
    assert '<span class="pill pill-healthy"' in row


def test_a_paused_connection_makes_the_flow_failing(world):
    flow = make_flow(world.workspace)
    flow.destination.pause("401 Unauthorized")
    [h] = flow_health.flow_health([flow])
    assert h.state == "failing"
    assert "401 Unauthorized" in h.connection_problems[0]


def test_the_flows_page_shows_health_and_charts_with_their_figures_as_text(world, client_for):
    flow = make_flow(world.workspace, name="Brightpearl → DotDigital")
    for _ in range(3):
        make_event(flow)
    response = client_for(world.member).get(reverse("monitoring:flows", args=["acme"]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Brightpearl → DotDigital" in body
    assert 'hx-trigger="every 10s"' in body
    assert 'data-chart="latency"' in body and 'id="chart-latency-data"' in body
    assert "uplot-1.6.32/uPlot.iife.min.js" in body
    # the text the chart stands for, for screen readers and without JavaScript
    assert "3 events delivered in the last 24 h" in body
    assert "<th>Source delay</th>" in body and "<th>DotDigital</th>" in body
    assert '<span class="pill pill-healthy"' in body


def test_the_live_refresh_renders_only_the_partial(world, client_for):
    make_flow(world.workspace, name="Stokly → DotDigital")
    response = client_for(world.member).get(
        reverse("monitoring:flows", args=["acme"]), HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="flows-live"')
    assert "<html" not in body


def test_the_flows_page_runs_a_bounded_number_of_queries(
    world, client_for, django_assert_max_num_queries
):
    flow = make_flow(world.workspace)
    for _ in range(30):
        make_event(flow)
    c = client_for(world.member)
    with django_assert_max_num_queries(30):
        c.get(reverse("monitoring:flows", args=["acme"]))


def test_a_timeline_by_order_number_shows_each_step_with_the_payload(world, client_for):
    flow = make_flow(world.workspace)
    event = make_event(flow, order_ref="SO-777", hold=SourceEvent.Hold.ORPHAN)
    make_event(flow, order_ref="SO-OTHER")
    response = client_for(world.member).get(
        reverse("monitoring:events", args=["acme"]), {"q": "SO-777"}
    )
    body = response.content.decode()
    assert event.source_event_id in body
    assert "SO-OTHER" not in body
    for step in (
        "Received by webhook",
        "Held: Waiting for its order",
        "Released and staged",
        "Delivered",
    ):
        assert step in body
    assert "Payload" in body and "order.created" in body


def test_a_timeline_by_source_event_id_and_an_unknown_key(world, client_for):
    flow = make_flow(world.workspace)
    event = make_event(flow)
    c = client_for(world.member)
    url = reverse("monitoring:events", args=["acme"])
    assert event.entity_key in c.get(url, {"q": event.source_event_id}).content.decode()
    assert "No event matches" in c.get(url, {"q": "nothing-like-it"}).content.decode()


def test_the_timeline_never_shows_another_workspaces_events(world, client_for):
    theirs = make_event(make_flow(world.other), order_ref="SO-1")
    body = (
        client_for(world.member)
        .get(reverse("monitoring:events", args=["acme"]), {"q": "SO-1"})
        .content.decode()
    )
    assert theirs.source_event_id not in body


def test_the_charts_refresh_on_their_own_and_the_table_refresh_leaves_them_alone(world, client_for):
    flow = make_flow(world.workspace, name="Stokly → DotDigital")
    make_event(flow)
    url = reverse("monitoring:flows", args=["acme"])
    client = client_for(world.member)
    table = client.get(f"{url}?flow={flow.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "flows-charts" not in table and "chart-latency-data" not in table
    charts = client.get(f"{url}?flow={flow.pk}&part=charts", HTTP_HX_REQUEST="true")
    body = charts.content.decode()
    assert body.lstrip().startswith('<div id="flows-charts"')
    assert 'hx-trigger="every 60s"' in body and 'id="chart-latency-data"' in body
    assert "flows-table" not in body


def test_the_flows_page_shows_each_lanes_latency_apart(world, client_for):
    # Dispatches in well under a second, status changes batched for seconds: one p95 of both
    # would read as neither.
    flow = make_flow(world.workspace, name="Mintsoft → DotDigital")
    for _ in range(20):
        make_event(flow, source_delay=0.01, queue=0.2, dotdigital=0.3, lane="realtime")
    for _ in range(10):
        make_event(flow, source_delay=0.01, queue=5, dotdigital=1.5, lane="bulk")
    [h] = flow_health.flow_health([flow])
    lanes = {lane.lane: lane for lane in h.lanes_hour}
    assert [lane.lane for lane in h.lanes_hour] == ["realtime", "bulk"]
    assert lanes["realtime"].delivered == 20 and lanes["bulk"].delivered == 10
    assert lanes["realtime"].p95 is not None and lanes["realtime"].p95 <= 1
    assert lanes["bulk"].p95 is not None and 5 < lanes["bulk"].p95 <= 10
    assert h.p95_hour is not None and h.p95_hour > 5  # all events together: the bulk tail
    text = client_for(world.member).get(reverse("monitoring:flows", args=["acme"])).content.decode()
    assert 'title="20 realtime events delivered in the last hour"' in text
    assert 'title="10 bulk events delivered in the last hour"' in text
    overview = client_for(world.member).get(reverse("monitoring:overview", args=["acme"]))
    assert (
        f"realtime p95 {flow_health.fmt_seconds(lanes['realtime'].p95)}"
        in overview.content.decode()
    )
