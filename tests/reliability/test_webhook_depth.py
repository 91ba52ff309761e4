"""Nesting has fixed limits: a body whose arrays and objects nest deeper than 512 levels is
malformed — stored whole, answered 400 with a clear message, one malformed_payload occurrence —
whatever the depth and however deep the server's own call stack is when it parses it; within
that, an event nesting deeper than the schema's 64 levels is invalid on its own."""

from __future__ import annotations

import json

import pytest

from connectors.sources.canonical.adapter import MAX_JSON_DEPTH, nesting_depth
from exceptions_inbox.models import Occurrence
from monitoring.models import SourceEvent, WebhookRequest
from tests.monitoring.engine import Source


@pytest.fixture
def erp(world):
    return Source(world.workspace, "brightpearl")


def nested(depth: int) -> str:
    """`depth` levels in all: an event list, the event, `data`, then lists to make up the rest."""
    inner = depth - 3
    return "[" * inner + '"deep"' + "]" * inner


def body_at_depth(erp, depth: int) -> bytes:
    event = erp.order("D-1")
    # Splice the nesting in as text: building it as objects would recurse in json.dumps.
    event["data"]["extra"] = "__NEST__"
    text = json.dumps([event]).replace('"__NEST__"', nested(depth))
    return text.encode()


def test_the_limit_is_counted_without_recursion_and_stops_early():
    assert nesting_depth("x") == 0
    assert nesting_depth({"a": [1, {"b": []}]}) == 4
    assert nesting_depth([[[]]]) == 3
    deep: list[object] = []
    for _ in range(5_000):  # deeper than the recursion limit: counted anyway
        deep = [deep]
    assert nesting_depth(deep) == MAX_JSON_DEPTH + 1  # it stops once past the limit


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 990, 20_000])
def test_a_body_nested_past_the_limit_is_malformed_stored_whole_and_in_the_inbox(erp, depth):
    body = body_at_depth(erp, depth)
    response = erp.post(body)
    assert response.status_code == 400
    stored = WebhookRequest.objects.get()
    assert bytes(stored.body) == body
    assert not SourceEvent.objects.exists()
    occurrence = Occurrence.objects.get(group__kind="malformed_payload")
    assert f"deeper than {MAX_JSON_DEPTH} levels" in json.dumps(occurrence.detail)


@pytest.mark.parametrize("depth", [66, MAX_JSON_DEPTH])  # events nest 65 and 511 deep
def test_a_body_within_the_limit_is_parsed_and_a_too_deep_event_is_invalid_on_its_own(erp, depth):
    fine = erp.order("D-2")
    deep = json.loads(body_at_depth(erp, depth))[0] if depth < 200 else None
    body = body_at_depth(erp, depth).replace(b"[{", b"[" + json.dumps(fine).encode() + b", {", 1)
    response = erp.post(body)
    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "invalid"]
    assert SourceEvent.objects.get().source_event_id == fine["source_event_id"]
    assert deep is None or nesting_depth(deep) == depth - 1
