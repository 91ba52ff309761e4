"""The flows page's charts carry their figures for uPlot (times in Unix seconds, hours in order)
and say the same in words and a table, in human units: a backfilled day reads as days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.models import FlowSample
from monitoring.watch import charts
from monitoring.watch.flow_health import LatencyBar

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_latency_in_days_reads_as_days_and_the_hours_stay_in_order():
    bars = [
        LatencyBar(NOON + timedelta(hours=h), 4, source=s, queue=2.0, dotdigital=0.4)
        for h, s in ((0, 0.5), (1, 3 * 86400), (2, 40.0))
    ]
    chart = charts.latency(bars)
    assert chart is not None
    assert chart.data["x"] == sorted(chart.data["x"])
    assert chart.data["x"][0] == int(NOON.timestamp())
    assert [row[0] for row in chart.rows] == ["12:00", "13:00", "14:00"]
    assert chart.rows[1][2] == "3.0 d" and chart.rows[0][5] == "2.9 s"
    assert "the slowest hour was 13:00 UTC at 3.0 d (mostly source delay)" in chart.summary
    html = charts.latency_chart(bars)
    assert 'id="chart-latency-data"' in html and '<td class="num">3.0 d</td>' in html


def test_no_deliveries_say_so_instead_of_an_empty_chart():
    assert "No deliveries in the last 24 hours." in charts.latency_chart([])


def test_backlog_gives_each_hours_highest_and_last_sample(world):
    from tests.monitoring.watch_support import make_flow

    flow = make_flow(world.workspace)
    points = [
        FlowSample(flow=flow, at=NOON + timedelta(minutes=m), backlog=b)
        for m, b in ((0, 1), (20, 7), (40, 2), (60, 3), (80, 0))
    ]
    chart = charts.backlog(points)
    assert chart is not None
    assert chart.rows == [["12:00", "7", "2"], ["13:00", "3", "0"]]
    assert chart.summary == (
        "0 events waiting at 13:20 UTC; the most in the last 24 h was 7 at 12:20 UTC."
    )
    assert charts.backlog(points[:1]) is None
