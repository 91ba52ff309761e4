"""/metrics: Prometheus text computed from the database, behind a bearer token."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from exceptions_inbox.recording import record_occurrence
from monitoring.models import SourceEvent
from tests.monitoring.watch_support import make_event, make_flow

pytestmark = pytest.mark.django_db


def scrape(token: str | None) -> tuple[int, str]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = Client().get("/metrics", **headers)
    return response.status_code, response.content.decode()


def test_it_is_404_without_a_configured_token(settings):
    settings.METRICS_TOKEN = ""
    assert scrape("anything")[0] == 404
    assert scrape(None)[0] == 404


def test_it_is_404_with_a_wrong_token(settings):
    settings.METRICS_TOKEN = "s3cret"
    assert scrape("wrong")[0] == 404
    assert scrape(None)[0] == 404


def test_it_counts_events_latency_backlog_and_open_exceptions(settings, world):
    settings.METRICS_TOKEN = "s3cret"
    flow = make_flow(world.workspace, name="ERP")
    for _ in range(3):
        make_event(flow, source_delay=1, queue=1, dotdigital=1)  # 3 s end to end
    make_event(flow, source_delay=1, queue=50, dotdigital=1)  # 52 s
    make_event(flow, state=SourceEvent.State.RECEIVED)
    record_occurrence(
        workspace=world.workspace,
        kind="sku_mapping_gap",
        event_key="event:1",
        stage="stage",
        message="SKU AB-12 not in the catalogue",
        subject_key="sku:AB-12",
    )
    status, text = scrape("s3cret")
    assert status == 200
    assert 'syncdesk_events{workspace="acme",flow="ERP",state="delivered"} 4' in text
    assert 'syncdesk_events{workspace="acme",flow="ERP",state="received"} 1' in text
    base = 'workspace="acme",flow="ERP",lane="realtime"'
    assert f'syncdesk_event_latency_seconds_bucket{{{base},le="1"}} 0' in text
    assert f'syncdesk_event_latency_seconds_bucket{{{base},le="5"}} 3' in text
    assert f'syncdesk_event_latency_seconds_bucket{{{base},le="60"}} 4' in text
    assert f'syncdesk_event_latency_seconds_bucket{{{base},le="+Inf"}} 4' in text
    assert f"syncdesk_event_latency_seconds_count{{{base}}} 4" in text
    assert f"syncdesk_event_latency_seconds_sum{{{base}}} 61.000" in text
    assert 'syncdesk_backlog{workspace="acme",flow="ERP"} 1' in text
    assert 'syncdesk_open_exceptions{workspace="acme",kind="sku_mapping_gap",team="ops"} 1' in text
    assert "# TYPE syncdesk_rate_limit_wait_seconds gauge" in text


def test_backfill_is_kept_out_of_the_latency_and_the_backlog_and_counted_apart(settings, world):
    settings.METRICS_TOKEN = "s3cret"
    flow = make_flow(world.workspace, name="ERP")
    make_event(flow, source_delay=1, queue=1, dotdigital=1)
    for _ in range(3):  # history of 2020, delivered within the hour
        make_event(flow, source_delay=5 * 365 * 86400, is_backfill=True)
    for _ in range(2):  # more of it waiting in the bulk lane for two hours
        waiting = make_event(flow, state=SourceEvent.State.RECEIVED, is_backfill=True)
        SourceEvent.objects.filter(pk=waiting.pk).update(
            received_at=timezone.now() - timedelta(hours=2)
        )
    status, text = scrape("s3cret")
    assert status == 200
    base = 'workspace="acme",flow="ERP",lane="realtime"'
    assert f'syncdesk_event_latency_seconds_bucket{{{base},le="5"}} 1' in text
    assert f"syncdesk_event_latency_seconds_count{{{base}}} 1" in text
    assert f"syncdesk_event_latency_seconds_sum{{{base}}} 3.000" in text
    assert 'syncdesk_backlog{workspace="acme",flow="ERP"} 0' in text
    assert 'syncdesk_backlog_oldest_age_seconds{workspace="acme",flow="ERP"} 0' in text
    assert 'syncdesk_backfill_backlog{workspace="acme",flow="ERP"} 2' in text
