"""Fuzzed webhooks: whatever is posted with a valid token, the answer follows design.md's table.

No answer is a 5xx; within the size limit the body is stored whole and each item gets a result
(202 when something in it was valid, 400 when nothing was); over the limit 413; an unknown token
404 with nothing stored; and nothing but the request, its events and its exceptions is written.
The generated bodies and the checks are in webhook_fuzz.py (the bench runs 10,000 of them).
"""

from __future__ import annotations

import pytest
from django.test import Client
from hypothesis import example, given

from tests.monitoring.engine import Source
from tests.reliability import webhook_fuzz
from tests.reliability.webhook_fuzz import Case, cases, check_case, event_template

VALID = webhook_fuzz._encode(event_template("order", 1), True)


@given(case=cases())
@example(case=Case(VALID, "application/json", clean=True, shape="example"))
@example(case=Case(VALID + b" " * (webhook_fuzz.LIMIT - len(VALID)), "application/json", clean=True, shape="example"))  # fmt: skip
@example(case=Case(VALID + b" " * (webhook_fuzz.LIMIT + 1 - len(VALID)), "application/json", shape="example"))  # fmt: skip
@example(case=Case(b"[" * 100_00, "application/json", shape="example"))
@example(case=Case(b'{"a": "\\u0000"}', "application/json", shape="example"))
def test_no_webhook_body_gets_a_5xx_and_every_answer_follows_the_table(case, source):
    check_case(case, source.token, source.client)


@pytest.fixture
def source(world, settings) -> Source:
    # Set once per test, not per example: each assignment stacks another settings layer, and
    # 1,000 of them exhaust the recursion limit (the bench's first run met exactly that).
    settings.SYNCDESK_WEBHOOK_MAX_BYTES = webhook_fuzz.LIMIT
    # Made once per test: the examples share the test's transaction, each rolling itself back.
    made = Source(world.workspace, "fuzz")
    made.client = Client()  # type: ignore[attr-defined]
    return made


def _event_with(path: tuple[str, ...], value: object) -> bytes:
    event = event_template("order", 7)
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return webhook_fuzz._encode(event, True)


# What the fuzzer found (each answered 503 before the fix in monitoring/pipeline/ingest.py).
FOUND = {
    "an offset PostgreSQL cannot store": _event_with(("occurred_at",), "0001-01-01T00:00:00+23:59"),
    "a time past year 9999 in UTC": _event_with(
        ("source_updated_at",), "9999-12-31T23:59:59-23:59"
    ),
    "NUL in a string": _event_with(("data", "order_number"), "SO-\x00"),
    "NUL in a key": _event_with(("data", "\x00"), 1),
    "a lone surrogate": _event_with(("identity", "email"), "\ud800@example.com"),
    "NaN": _event_with(("data", "quantity"), float("nan")),
    "nesting 300 deep": _event_with(("data", "extra"), "__deep_300_dict__"),
}
# Bodies nesting deeper than 512 levels are malformed as a whole (tests/reliability/
# test_webhook_depth.py): the 10,000-example run found a body of ~990 levels that the parser
# refused or took depending on the depth of its own call stack.


@pytest.mark.parametrize("body", FOUND.values(), ids=FOUND.keys())
def test_an_event_no_database_can_store_is_invalid_not_a_503(body, source):
    check_case(Case(body, "application/json", shape="found"), source.token)
    response = source.post(body)
    assert response.status_code == 400
    assert response.json()["results"][0]["status"] == "invalid"
