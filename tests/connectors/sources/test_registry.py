"""The adapter registry and the canonical webhook adapter (no engine rows involved)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from connectors.models import Connection
from connectors.sources.base import SourceError, WebhookRequestData
from connectors.sources.canonical.adapter import CanonicalAdapter
from connectors.sources.registry import get_adapter


def request(body, content_type="application/json", **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookRequestData(body=raw, content_type=content_type, headers=headers)


def test_the_canonical_adapter_serves_canonical_connections():
    assert isinstance(get_adapter("canonical"), CanonicalAdapter)


def test_a_kind_without_an_adapter_has_none():
    assert get_adapter("no-such-kind") is None


def test_it_reads_one_event_a_list_or_an_envelope_with_the_backfill_flag():
    adapter = CanonicalAdapter()
    conn = Connection(kind="canonical")
    assert len(adapter.parse_webhook(conn, request({"event_type": "x"})).events) == 1
    assert len(adapter.parse_webhook(conn, request([{}, {}])).events) == 2
    items = adapter.parse_webhook(conn, request({"events": [{}], "backfill": True}))
    assert items.backfill and len(items.events) == 1
    assert adapter.parse_webhook(conn, request([{}], **{"X-Syncdesk-Backfill": "true"})).backfill


def test_it_reports_items_that_are_not_objects_by_their_index():
    items = CanonicalAdapter().parse_webhook(Connection(kind="canonical"), request([{}, 3, {}]))
    assert items.positions == [0, 2]
    assert [e.index for e in items.errors] == [1]


def test_it_refuses_bodies_that_are_not_json_or_of_another_content_type():
    adapter = CanonicalAdapter()
    conn = Connection(kind="canonical")
    assert adapter.parse_webhook(conn, request(b"{oops")).errors
    assert adapter.parse_webhook(conn, request({}, content_type="text/csv")).errors


def test_a_push_only_source_says_it_cannot_poll():
    adapter = CanonicalAdapter()
    conn = Connection(kind="canonical")
    with pytest.raises(SourceError) as raised:
        adapter.poll(conn, "")
    assert raised.value.permanent
    with pytest.raises(SourceError):
        adapter.backfill(
            conn, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), ""
        )


def test_a_lookup_while_another_thread_loads_the_adapters_waits_for_them(monkeypatch):
    """gunicorn's threads: the second lookup must not see "loaded" before the adapters are."""
    import threading

    from connectors.sources import registry

    importing, second_looked = threading.Event(), threading.Event()

    class Slow(CanonicalAdapter):
        kind = "slow-kind"

    def slow_import() -> None:
        importing.set()
        second_looked.wait(timeout=2)  # bounded: with the lock the other lookup waits for us
        registry.ADAPTERS["slow-kind"] = Slow()

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "ADAPTERS", dict(registry.ADAPTERS))
    monkeypatch.setattr(registry, "_import_adapters", slow_import)
    found: dict[str, object] = {}
    first = threading.Thread(target=lambda: found.setdefault("first", get_adapter("slow-kind")))
    first.start()
    assert importing.wait(timeout=10)
    found["second"] = get_adapter("slow-kind")
    second_looked.set()
    first.join(timeout=10)
    assert isinstance(found["first"], Slow)
    assert isinstance(found["second"], Slow)
