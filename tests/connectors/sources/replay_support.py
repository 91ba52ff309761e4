"""What the demo recordings' end-to-end tests check of a replay's times: it happens now."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from connectors.sources.replay import ANCHOR_ENV
from connectors.sources.values import rfc3339
from monitoring.models import Flow, SourceEvent
from monitoring.watch.flow_health import flow_health


@pytest.fixture
def present(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The replay's anchor, as run_demo sets it for the recorded API and the replay alike."""
    anchor = timezone.now().replace(microsecond=0)
    monkeypatch.setenv(ANCHOR_ENV, rfc3339(anchor))
    return anchor


def occurred(flow: Flow, event_type: str) -> datetime:
    """When the flow's first event of the type happened."""
    return min(
        SourceEvent.objects.filter(flow=flow, event_type=event_type).values_list(
            "occurred_at", flat=True
        )
    )


def assert_replayed_now(flow: Flow, anchor: datetime) -> None:
    """Every event happened in the minutes before the anchor, none after it arrived, and the
    flow's latency is the engine's own: not lagging."""
    events = SourceEvent.objects.filter(flow=flow)
    assert events.exists()
    for event in events:
        assert anchor - timedelta(minutes=5) <= event.occurred_at <= event.received_at, (
            event.event_type,
            event.occurred_at,
        )
    [health] = flow_health([flow])
    assert health.p95_hour is not None and health.p95_hour < 5 * 60
    assert not health.is_lagging
