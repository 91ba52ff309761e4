"""Generated webhook bodies and the properties every answer must keep (design.md's webhook table).

Shared by the CI test (tests/reliability/test_webhook_fuzz.py, profile "ci") and the bench
(bench/fuzz_webhook.py, profile "bench"). The oracle below reads the body on its own (the
published format: one event, a list, or ``{"events": [...]}``; the published JSON schema) and
imports nothing of the engine's ingest code.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.apps import apps
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client
from hypothesis import strategies as st

SCHEMA = (
    Path(__file__).resolve().parents[2] / "monitoring" / "schemas" / "canonical-event.schema.json"
)
LIMIT = 16 * 1024  # SYNCDESK_WEBHOOK_MAX_BYTES while fuzzing: bodies at and over it stay cheap
STORED_PART = 64 * 1024
JSON_TYPES = ("application/json", "application/cloudevents-batch+json")
# Rows a webhook may add: the request, its events, and the exceptions it opens.
MAY_CHANGE = {
    "monitoring.webhookrequest",
    "monitoring.sourceevent",
    "exceptions_inbox.exceptiongroup",
    "exceptions_inbox.occurrence",
    "exceptions_inbox.activity",
    "exceptions_inbox.knownflow",
}
STATS: Counter[str] = Counter()  # what the examples were, for the bench's report


# -- generation --------------------------------------------------------------------------------

ODD_CHARS = [
    "\x00",  # NUL: PostgreSQL text and jsonb refuse it
    "\ud800",  # a lone high surrogate (valid in a JSON escape, not in UTF-8)
    "\udfff",
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\ufeff",  # byte order mark
    "\u200d",  # zero-width joiner
    "\u0301",  # combining acute
    "\U0001f600",
    "\uffff",
    "\x7f",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: matches \d in Python's re
    "\n",
    '"',
    "\\",
]
odd_text = st.lists(
    st.one_of(st.sampled_from(ODD_CHARS), st.characters(codec=None)), max_size=20
).map("".join)
huge_text = st.integers(min_value=1_000, max_value=12_000).map(lambda n: "x" * n)
odd_times = st.sampled_from(
    [
        "2026-13-45T10:00Z",  # matches the schema's pattern, is no date
        "2026-02-30T10:00:00Z",
        "2026-05-01T25:61:61Z",
        "0000-01-01T00:00Z",
        "0001-01-01T00:00:00+23:59",  # before datetime.min in UTC
        "9999-12-31T23:59:59-23:59",  # after datetime.max in UTC
        "\u0662\u0660\u0662\u0666-05-01T10:00Z",  # Arabic-Indic digits
        "2026-05-01T10:00:00.1234567890123Z",
        "2026-05-01T10:00+0100",
        "2026-05-01",
        "",
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(odd_text | st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)


DEEP = re.compile(r'"__deep_(\d+)_(list|dict)__"')


def _deep_text(match: re.Match[str]) -> str:
    """Deep nesting is spliced into the serialised text: building it as Python objects would hit
    the interpreter's recursion limit while generating, which is not what is being tested."""
    depth, kind = int(match.group(1)), match.group(2)
    if kind == "list":
        return "[" * depth + '"deep"' + "]" * depth
    return '{"a": ' * depth + '"deep"' + "}" * depth


deep_values = st.builds(
    "__deep_{}_{}__".format,
    st.integers(min_value=20, max_value=5_000),
    st.sampled_from(["list", "dict"]),
)


def event_template(kind: str, n: int) -> dict[str, Any]:
    """A schema-valid canonical event of one of a few kinds, numbered `n`."""
    at = "2026-05-01T10:00:00Z"
    base: dict[str, Any] = {
        "schema": "sync.event/v1",
        "source": {"system": "fuzz", "account": "fuzz-acct"},
        "source_event_id": f"fuzz:{n}",
        "occurred_at": at,
        "source_updated_at": at,
    }
    if kind == "order":
        number = f"SO-{n}"
        base |= {
            "event_type": "order.created",
            "entity": {"type": "order", "key": f"fuzz:order:{number}"},
            "identity": {"email": f"jo{n}@example.com", "is_guest": False},
            "data": {
                "order_key": f"fuzz:order:{number}",
                "order_number": number,
                "placed_at": at,
                "currency": "GBP",
                "lines": [
                    {
                        "line_key": "1",
                        "sku": "TEE-RED-M",
                        "quantity": 1,
                        "line_total": {"amount": "30.00", "currency": "GBP"},
                    }
                ],
                "totals": {"grand_total": {"amount": "30.00", "currency": "GBP"}},
                "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
            },
        }
    elif kind == "customer":
        base |= {
            "event_type": "customer.upserted",
            "entity": {"type": "customer", "key": f"fuzz:customer:{n}"},
            "identity": {"email": f"ann{n}@example.com", "source_customer_id": str(n)},
            "data": {
                "customer_key": f"fuzz:customer:{n}",
                "first_name": "Ann",
                "source_updated_at": at,
            },
        }
    elif kind == "dispatch":
        key = f"fuzz:shipment:{n}"
        base |= {
            "event_type": "shipment.dispatched",
            "entity": {"type": "shipment", "key": key},
            "links": {"order_number": f"SO-{n}"},
            "data": {
                "shipment_key": key,
                "order_key": f"fuzz:order:SO-{n}",
                "dispatched_at": at,
                "lines": [{"sku": "TEE-RED-M", "quantity": 1}],
                "tracking_numbers": [],
            },
        }
    else:
        base |= {
            "event_type": "product.updated",
            "entity": {"type": "product", "key": f"fuzz:product:{n}"},
            "data": {"sku": f"SKU-{n}", "product_key": f"fuzz:product:{n}", "status": "active"},
        }
    return base


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            out += paths_of(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += paths_of(inner, (*prefix, index))
    return out


@st.composite
def mutated_event(draw: st.DrawFn, n: int) -> tuple[dict[str, Any], bool]:
    """An event and whether it was left as made (then it must be accepted)."""
    event = copy.deepcopy(
        event_template(draw(st.sampled_from(["order", "customer", "dispatch", "product"])), n)
    )
    mutations = draw(st.integers(min_value=0, max_value=3))
    for _ in range(mutations):
        paths = paths_of(event)
        path = draw(st.sampled_from(paths))
        parent: Any = event
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["delete", "value", "odd", "huge", "deep", "time", "key"]))
        last = path[-1]
        if how == "delete":
            del parent[last]
        elif how == "key" and isinstance(parent, dict):
            parent[draw(odd_text)] = parent.pop(last)
        elif how == "time":
            event[draw(st.sampled_from(["occurred_at", "source_updated_at"]))] = draw(odd_times)
        else:
            strategy = {
                "value": json_values,
                "odd": odd_text,
                "huge": huge_text,
                "deep": deep_values,
                "key": json_values,
            }[how]
            parent[last] = draw(strategy)
    return event, mutations == 0


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON ; charset=UTF-8",
    "application/cloudevents-batch+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "",
    "application/json; charset=latin-1",
    "application/jsonx",
]


@dataclass
class Case:
    body: bytes
    content_type: str
    known_token: bool = True
    #: every event is exactly as made and the body is JSON of a JSON type: all are accepted
    clean: bool = False
    shape: str = ""


def _encode(document: Any, ascii_only: bool) -> bytes:
    text = DEEP.sub(_deep_text, json.dumps(document, ensure_ascii=ascii_only))
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def cases(draw: st.DrawFn) -> Case:
    shape = draw(
        st.sampled_from(
            ["events", "events", "events", "bytes", "truncated", "at_limit", "over_limit", "json"]
        )
    )
    content_type = draw(st.sampled_from(CONTENT_TYPES[:4]) | st.sampled_from(CONTENT_TYPES))
    known = draw(st.integers(min_value=0, max_value=19)) != 0
    if shape == "bytes":
        return Case(draw(st.binary(max_size=300)), content_type, known, shape=shape)
    if shape == "json":
        return Case(
            _encode(draw(json_values), draw(st.booleans())), content_type, known, shape=shape
        )
    count = draw(st.integers(min_value=1, max_value=4))
    base = draw(st.integers(min_value=0, max_value=10**6)) * 10
    made = [draw(mutated_event(base + i)) for i in range(count)]
    events = [e for e, _ in made]
    if draw(st.booleans()) and count > 1:  # a repeat inside one body
        events.append(copy.deepcopy(events[0]))
        made.append(made[0])
    wrapper = draw(st.sampled_from(["single", "list", "object"]))
    document: Any
    if wrapper == "single":
        document = events[0]
        made = made[:1]
    elif wrapper == "list":
        document = events
    else:
        document = {"events": events, "backfill": draw(st.booleans())}
    body = _encode(document, draw(st.booleans()))
    clean = all(ok for _, ok in made) and content_type.split(";")[0].strip().lower() in JSON_TYPES
    clean = clean and "latin-1" not in content_type
    if shape == "truncated" and len(body) > 1:
        cut = draw(st.integers(min_value=0, max_value=len(body) - 1))
        return Case(body[:cut], content_type, known, shape=shape)
    if shape in ("at_limit", "over_limit"):
        size = LIMIT if shape == "at_limit" else LIMIT + draw(st.integers(1, 64))
        if len(body) <= size:
            body = body + b" " * (size - len(body))  # JSON allows trailing whitespace
        return Case(body, content_type, known, clean and len(body) <= LIMIT, shape=shape)
    return Case(body, content_type, known, clean and len(body) <= LIMIT, shape=shape)


# -- the oracle -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    return Draft202012Validator(json.loads(SCHEMA.read_text()))


def schema_valid(candidate: Any) -> bool:
    try:
        return isinstance(candidate, dict) and _schema_validator().is_valid(candidate)
    except RecursionError:
        return False


# The published limit on nesting (docs/reliability.md), restated here rather than imported.
MAX_JSON_DEPTH = 512


def too_deep(document: Any) -> bool:
    """Arrays and objects nested deeper than the published limit (counted here independently)."""
    level, frontier = 0, [document]
    while frontier:
        containers = [v for v in frontier if isinstance(v, dict | list)]
        if not containers:
            return False
        level += 1
        if level > MAX_JSON_DEPTH:
            return True
        frontier = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return False


def candidates_of(case: Case) -> list[Any] | None:
    """The items of the body by the published format; None when it is no JSON of a JSON type."""
    if case.content_type.split(";", 1)[0].strip().lower() not in JSON_TYPES:
        return None
    try:
        document = json.loads(case.body)
    except (ValueError, RecursionError):
        return None
    if too_deep(document):
        return None
    if isinstance(document, dict) and "events" in document:
        document = document["events"]
    return document if isinstance(document, list) else [document]


# -- the check -----------------------------------------------------------------------------------


class _Rollback(Exception):
    pass


@lru_cache(maxsize=1)
def _counted() -> tuple[tuple[str, str], ...]:
    """(model label, table) of every model whose table exists (models being written by others
    may not have their migration yet)."""
    tables = set(connection.introspection.table_names())
    return tuple(
        (m._meta.label_lower, m._meta.db_table)
        for m in apps.get_models()
        if m._meta.db_table in tables and m._meta.managed
    )


def _counts() -> dict[str, int]:
    """Row counts of every table, in one query."""
    counted = _counted()
    quote = connection.ops.quote_name
    sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {quote(t)})" for _, t in counted)
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return {label: int(n) for (label, _), n in zip(counted, row, strict=True)}


def check_case(case: Case, token: str, client: Client | None = None) -> None:
    """Post one case and assert every property; the database is rolled back afterwards.

    Pass one `client` for many cases: each new Client loads the middleware again (WhiteNoise
    then scans the static files), which costs more than the request."""
    from monitoring.models import SourceEvent, WebhookRequest

    STATS[case.shape] += 1
    cache.clear()  # the unknown-token rate limit is per minute: each example starts afresh
    try:
        with transaction.atomic():
            before = _counts()
            last_event = SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
            url = f"/hooks/{token if case.known_token else 'no-such-token'}/"
            response = (client or Client()).generic(
                "POST", url, case.body, content_type=case.content_type
            )
            status = response.status_code
            STATS[f"answer {status}"] += 1
            assert status < 500, f"{status}: {response.content[:500]!r}"
            changed = {k: v - before[k] for k, v in _counts().items() if v != before[k]}
            if not case.known_token:
                assert status == 404
                assert not changed, changed
                raise _Rollback
            answer = response.json()
            assert set(changed) <= MAY_CHANGE, changed
            assert changed.get("monitoring.webhookrequest") == 1, changed
            stored = WebhookRequest.objects.get(pk=answer["request_id"])
            if len(case.body) > LIMIT:
                assert status == 413
                assert stored.truncated
                assert bytes(stored.body) == case.body[:STORED_PART]
                assert "monitoring.sourceevent" not in changed
                raise _Rollback
            assert status in (202, 400), status
            assert bytes(stored.body) == case.body, "the body is not stored whole"
            assert stored.status_code == status
            results = answer["results"]
            accepted = [r for r in results if r["status"] == "accepted"]
            kept = [r for r in results if r["status"] in ("accepted", "duplicate")]
            assert all(r["status"] in ("accepted", "duplicate", "invalid") for r in results)
            assert all(r.get("errors") for r in results if r["status"] == "invalid")
            assert answer["accepted"] == len(accepted)
            new_events = SourceEvent.objects.filter(pk__gt=last_event or 0)
            assert new_events.count() == len(accepted) == changed.get("monitoring.sourceevent", 0)
            assert all(e.request_id == stored.pk for e in new_events)
            assert {r["event_id"] for r in kept} <= set(new_events.values_list("pk", flat=True))
            assert status == (202 if kept else 400)
            items = candidates_of(case)
            if items is None:
                assert status == 400 and not results
            else:
                assert [r["index"] for r in results] == list(range(len(items)))
                for item, result in zip(items, results, strict=True):
                    if not schema_valid(item):
                        assert result["status"] == "invalid", (item, result)
            if case.clean:
                assert status == 202 and all(r["status"] != "invalid" for r in results), answer
            if status == 400 or len(kept) < len(results):
                assert changed.get("exceptions_inbox.occurrence", 0) >= 1, changed
            raise _Rollback
    except _Rollback:
        pass
