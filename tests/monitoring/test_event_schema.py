"""The webhook's fast schema check (fastjsonschema's predicate) never calls an event valid that the
published schema, read by jsonschema, refuses; and it stands aside for any schema it might read
another way."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventgen import Generator
from monitoring.pipeline import event_schema
from tests.reliability.webhook_fuzz import paths_of


def _valid_events() -> list[dict[str, Any]]:
    """Valid events of every type the schema names: the generator's mix, and the three types it
    does not send built from its events."""
    gen = Generator(seed=5, customers=50, live=True)
    events = gen.catalogue_events()[:20] + gen.events(600)
    order = next(e for e in events if e["event_type"] == "order.created")
    dispatch = next(e for e in events if e["event_type"] == "shipment.dispatched")
    updated = {**copy.deepcopy(order), "event_type": "order.updated", "source_event_id": "u-1"}
    updated["data"]["revision"] = order["occurred_at"]
    returned = {
        **copy.deepcopy(dispatch),
        "event_type": "return.received",
        "source_event_id": "r-1",
        "entity": {"type": "return", "key": "return-1"},
        "data": {
            "return_key": "return-1",
            "order_key": dispatch["data"]["order_key"],
            "received_at": dispatch["occurred_at"],
            "lines": [{"sku": "HAT-1", "quantity": 1}],
        },
    }
    tracking = {
        **copy.deepcopy(dispatch),
        "event_type": "shipment.tracking_updated",
        "source_event_id": "t-1",
        "data": {"shipment_key": dispatch["data"]["shipment_key"], "tracking_numbers": ["T1"]},
    }
    return [*events, updated, returned, tracking]


VALID = _valid_events()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def _jsonschema_says(event: Any) -> bool:
    return bool(event_schema._validator(event).is_valid(event))


def test_every_event_type_of_the_published_schema_has_a_fast_check():
    checks = event_schema._fast_checks()
    assert set(checks) == {"", *(e["event_type"] for e in VALID)}
    assert all(check is not None for check in checks.values())


def test_the_fast_check_calls_every_valid_event_valid():
    assert {e["event_type"] for e in VALID if not event_schema._is_valid(e)} == set()
    assert all(_jsonschema_says(e) for e in VALID)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), replacement=JSON_VALUES, delete=st.booleans())
def test_an_event_the_fast_check_calls_valid_is_valid_to_jsonschema(data, replacement, delete):
    event = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    path = data.draw(st.sampled_from(paths_of(event)))
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    if event_schema._is_valid(event):
        assert _jsonschema_says(event), json.dumps(event)[:500]


def test_validation_reports_the_field_the_fast_check_refused():
    event = copy.deepcopy(next(e for e in VALID if e["event_type"] == "order.created"))
    event["data"]["currency"] = 42
    assert not event_schema._is_valid(event)
    assert [e["path"] for e in event_schema.validate_event(event)] == ["data.currency"]


def _schema(**extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"a": {"type": "string", **extra}}}


def test_a_keyword_draft_7_could_read_another_way_leaves_the_schema_to_jsonschema():
    assert event_schema.fast_check(_schema()) is not None
    assert event_schema.fast_check({**_schema(), "unevaluatedProperties": False}) is None
    assert event_schema.fast_check(_schema(format="date-time")) is None
    assert event_schema.fast_check({"type": "array", "prefixItems": [{"type": "string"}]}) is None
    assert event_schema.fast_check(_schema(enum=["x", 1])) is None
    assert event_schema.fast_check(_schema(const=True)) is None
    # Draft 7 reads a $ref alone, ignoring what stands beside it; 2020-12 applies both.
    beside = {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "minLength": 2}
    assert event_schema.fast_check(beside) is None


def test_a_reference_outside_the_schema_is_never_fetched():
    assert event_schema.fast_check({"$ref": "https://example.invalid/schema.json"}) is None
    local = {"$defs": {"name": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/name"}}}
    check = event_schema.fast_check(local)
    assert check is not None and check({"a": "x"}) and not check({"a": 1})


def test_compiling_leaves_the_published_schema_as_it_was():
    schema = event_schema._validators()["order.created"].schema
    before = json.dumps(schema, sort_keys=True)
    event_schema.fast_check(schema)
    assert json.dumps(schema, sort_keys=True) == before


UNSTORABLE_TEXT = st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\ud800", "\\", "u", "0"]))
ANY_VALUES = st.recursive(
    st.none() | st.floats() | st.integers() | UNSTORABLE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(UNSTORABLE_TEXT, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(value=ANY_VALUES, depth=st.integers(min_value=0, max_value=70))
def test_the_quick_storability_check_passes_only_what_the_walk_passes(value, depth):
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    if event_schema._surely_storable(value):
        assert event_schema._unstorable_values(value) == []
    assert event_schema._unstorable(value) == event_schema._unstorable_values(value)


def test_the_quick_storability_check_passes_the_generators_events():
    assert all(event_schema._surely_storable(e) for e in VALID)
