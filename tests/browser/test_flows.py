"""Ops watches the flows in headless Chromium: health per flow with charts refreshed live, then
one order's timeline from the source to DotDigital."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from monitoring.models import FlowSample, SourceEvent
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD
from tests.monitoring.watch_support import make_event, make_flow

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def busy_day(flow, slow_hours=(), n_per_hour=6):
    now = timezone.now()
    for hours_ago in range(23, -1, -1):
        for i in range(n_per_hour):
            slow = hours_ago in slow_hours
            occurred = now - timedelta(hours=hours_ago, minutes=50 - i * 7)
            make_event(
                flow,
                occurred=occurred,
                source_delay=4 + i,
                queue=(240 if slow else 6) + i * 2,
                dotdigital=(35 if slow else 3) + i,
            )
    for minutes_ago in range(24 * 60, 0, -20):
        FlowSample.objects.create(
            flow=flow,
            at=(now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0),
            backlog=max(0, 40 - abs(minutes_ago - 600) // 12),
        )


@pytest.mark.django_db(transaction=True)
def test_ops_sees_flow_health_and_an_orders_timeline(page, live_server, world):
    erp = make_flow(world.workspace, name="Brightpearl → DotDigital", lag_threshold_seconds=300)
    wms = make_flow(world.workspace, name="Mintsoft → DotDigital", lag_threshold_seconds=60)
    make_flow(world.workspace, name="Stokly → DotDigital", is_active=False)
    busy_day(erp, slow_hours=(9, 10))
    busy_day(wms, n_per_hour=3)
    for _ in range(4):
        waiting = make_event(wms, state=SourceEvent.State.READY)
        SourceEvent.objects.filter(pk=waiting.pk).update(
            received_at=timezone.now() - timedelta(minutes=12)
        )
    make_event(
        erp,
        order_ref="SO-10042",
        hold=SourceEvent.Hold.ORPHAN,
        envelope={
            "event_type": "shipment.dispatched",
            "data": {"order_number": "SO-10042", "tracking_numbers": ["JD0002231"]},
        },
        event_type="shipment.dispatched",
    )

    page.goto(f"{live_server.url}/login/?next=/w/acme/flows/")
    page.fill("#id_username", "teammate")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Flows")
    rows = page.locator(".flows-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="Brightpearl")).to_contain_text("healthy")
    expect(rows.filter(has_text="Mintsoft")).to_contain_text("lagging")
    expect(rows.filter(has_text="Stokly")).to_contain_text("paused")
    # uPlot draws both charts; the y ticks are round numbers in one human unit, in order
    expect(page.locator(".chart canvas")).to_have_count(2)
    latency = page.locator('[data-chart="latency"]')
    ticks = latency.get_attribute("data-y-ticks").split("|")
    assert all(t.endswith(" min") for t in ticks), ticks
    values = [float(t.split()[0]) for t in ticks]
    assert values == sorted(set(values)) and values[0] == 0
    backlog_ticks = page.locator('[data-chart="backlog"]').get_attribute("data-y-ticks")
    counts = [int(t) for t in backlog_ticks.split("|")]
    assert counts == sorted(set(counts)), counts
    # hovering a bar shows its values, in units
    box = latency.locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] - 3)
    expect(latency.locator(".u-legend .u-series").nth(2)).to_contain_text(" s")
    expect(page.locator("#chart-latency figcaption")).to_contain_text("delivered in the last 24 h")
    # the charts' own refresh swaps them in and draws them again
    page.evaluate(
        """() => { const old = document.getElementById("flows-charts");
                   old.setAttribute("data-old", "1");
                   return htmx.ajax("GET", old.getAttribute("hx-get"),
                                    {target: "#flows-charts", swap: "outerHTML"}); }"""
    )
    expect(page.locator("#flows-charts[data-old]")).to_have_count(0)
    expect(page.locator(".chart canvas")).to_have_count(2)
    expect(page.locator("#flows-live")).to_have_attribute("hx-trigger", "every 10s")
    screenshot(page, "flows.png")

    page.click("nav.mainnav >> text=Events")
    page.fill("#q", "SO-10042")
    page.click("text=Show timeline")
    timeline = page.locator(".event-timeline")
    expect(timeline).to_have_count(1)
    expect(timeline).to_contain_text("Held: Waiting for its order")
    expect(timeline).to_contain_text("Released and staged")
    expect(timeline).to_contain_text("Delivered")
    assert "q=SO-10042" in page.url
    timeline.locator("details.payload summary").first.click()
    expect(timeline.locator("pre").first).to_contain_text("JD0002231")
    screenshot(page, "timeline.png")
