"""Events that arrive by poll, by notification fetch and by webhook share one deduplication."""

from __future__ import annotations

import pytest

from connectors.sources import registry
from connectors.sources.base import Page
from connectors.sources.canonical.adapter import CanonicalAdapter
from monitoring.models import SourceEvent, SourceNotification
from monitoring.pipeline.sources import poll_flow, run_fetch
from tests.monitoring.engine import Source, stage


class PollingSource(CanonicalAdapter):
    """A source with an API to page through (and the canonical webhook too)."""

    can_poll = True
    pages: list[Page] = []

    def poll(self, connection, cursor):
        return self.pages.pop(0)


class IdsOnlySource(CanonicalAdapter):
    """A source whose webhooks name records by id (Brightpearl's shape)."""

    sends_ids_only = True
    records: dict[str, dict] = {}

    def parse_webhook(self, connection, request):
        items = super().parse_webhook(connection, request)
        items.notifications, items.events, items.positions = items.events, [], []
        return items

    def fetch(self, connection, notification):
        return [self.records[notification["id"]]]


@pytest.fixture
def adapter_for(monkeypatch):
    def install(kind, adapter):
        registry._load()
        monkeypatch.setitem(registry.ADAPTERS, kind, adapter)
        return adapter

    return install


def test_the_same_event_by_webhook_and_by_poll_is_stored_once(world, adapter_for):
    adapter = adapter_for("canonical", PollingSource())
    erp = Source(world.workspace, "stokly")
    event = erp.order("SO-1")
    assert erp.post(event).json()["accepted"] == 1
    adapter.pages = [Page([event, erp.order("SO-2")], cursor="c2", reached_present=True)]
    assert poll_flow(erp.flow.pk) == 1
    assert SourceEvent.objects.count() == 2
    erp.flow.refresh_from_db()
    assert erp.flow.poll_cursor == "c2"


def test_a_poller_reaching_the_present_completes_the_backfill(world, adapter_for):
    from monitoring.pipeline.flows import start_backfill

    adapter = adapter_for("canonical", PollingSource())
    erp = Source(world.workspace, "stokly")
    start_backfill(erp.flow)
    adapter.pages = [
        Page([erp.order("SO-1")], cursor="c1"),
        Page([erp.order("SO-2")], cursor="c2", reached_present=True),
    ]
    poll_flow(erp.flow.pk)
    erp.flow.refresh_from_db()
    assert erp.flow.backfill_state == "complete"
    assert erp.flow.backfill_completed_by == "poller"
    assert erp.flow.backfill_counts == {"order.created": 2}
    assert all(SourceEvent.objects.values_list("is_backfill", flat=True))


def test_an_ids_only_webhook_is_stored_answered_at_once_and_fetched_into_events(world, adapter_for):
    adapter = adapter_for("canonical", IdsOnlySource())
    erp = Source(world.workspace, "brightpearl")
    record = erp.order("SO-1")
    adapter.records = {"order:1": record}
    response = erp.post({"events": [{"id": "order:1"}]})
    assert response.status_code == 202
    assert response.json()["notifications"] == 1
    note = SourceNotification.objects.get()
    assert note.state == "pending" and not SourceEvent.objects.exists()
    assert run_fetch() == 1
    note.refresh_from_db()
    assert note.state == "done" and note.events_count == 1
    event = SourceEvent.objects.get()
    assert event.via == "notification" and event.notification == note
    stage()
    event.refresh_from_db()
    assert event.state == "ready"
