"""The API's authorization matrix: every route, as each kind of caller.

Callers: anon (no key), outsider (an admin key of another workspace: 404, as on the pages), read
(a read key of the owning team), other_team (an act key of another team), team (an act key of
the owning team), admin (an act key without a team: a workspace admin's). Each caller acts on an
object of its own, so one caller's action never changes what the next one finds. A route missing
from `RULES` fails the first test, so no route ships without saying who may use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.main import api
from tests.api.support import KeyClient, make_key
from tests.exceptions_inbox.factories import make_group
from tests.monitoring.watch_support import make_alert, make_difference, make_event, make_flow

CALLERS = ("anon", "outsider", "read", "other_team", "team", "admin")


def each(anon: int, outsider: int, read: int, other_team: int, team: int, admin: int):
    return dict(zip(CALLERS, (anon, outsider, read, other_team, team, admin), strict=True))


READS = each(401, 404, 200, 200, 200, 200)
TEAM_ACTS = each(401, 404, 403, 403, 200, 200)


@dataclass(frozen=True)
class Rule:
    expected: dict[str, int]
    target: Callable[[Any], dict[str, Any]] = field(default=lambda ws: {})
    body: Callable[[Any], dict[str, Any]] | None = None
    owner: str = "ops"  # the team that owns the object


_skus = itertools.count(1)


def _group(ws):
    return {"group_id": make_group(ws, sku=f"GAP-{next(_skus)}").pk}


def _event(ws):
    return {"event_id": make_event(make_flow(ws, destination=False)).pk}


def _run(ws):
    return {"run_id": make_difference(ws).run_id}


def _alert(ws):
    return {"alert_id": make_alert(ws).pk}


def _flow(ws):
    return {"flow_id": make_flow(ws, destination=False).pk}


def _action(name: str, body=None, expected=TEAM_ACTS) -> Rule:
    return Rule(expected, _group, body or (lambda ws: {}))


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/w/{ws}/flows"): Rule(READS),
    ("GET", "/w/{ws}/events"): Rule(READS),
    ("GET", "/w/{ws}/events/{event_id}"): Rule(READS, _event),
    ("GET", "/w/{ws}/exceptions"): Rule(READS),
    ("GET", "/w/{ws}/exceptions/{group_id}"): Rule(READS, _group),
    ("POST", "/w/{ws}/exceptions/{group_id}/assign"): _action(
        "assign", lambda ws: {"assignee": "teammate"}
    ),
    # Any act key of the workspace may comment, as any member may on the pages.
    ("POST", "/w/{ws}/exceptions/{group_id}/comment"): _action(
        "comment", lambda ws: {"note": "Ticket SUP-12"}, each(401, 404, 403, 200, 200, 200)
    ),
    ("POST", "/w/{ws}/exceptions/{group_id}/acknowledge"): _action("acknowledge"),
    ("POST", "/w/{ws}/exceptions/{group_id}/snooze"): _action("snooze", lambda ws: {"more": 5}),
    # Legal for no new group: the right to act is checked before the state.
    ("POST", "/w/{ws}/exceptions/{group_id}/unsnooze"): _action(
        "unsnooze", expected=each(401, 404, 403, 403, 409, 409)
    ),
    ("POST", "/w/{ws}/exceptions/{group_id}/resolve"): _action("resolve"),
    ("POST", "/w/{ws}/exceptions/{group_id}/ignore"): _action("ignore"),
    ("POST", "/w/{ws}/exceptions/{group_id}/reopen"): _action(
        "reopen", expected=each(401, 404, 403, 403, 409, 409)
    ),
    ("POST", "/w/{ws}/exceptions/{group_id}/retry"): _action("retry"),
    # An empty fix is refused (422) for those who may fix; before that, for the others.
    ("POST", "/w/{ws}/exceptions/{group_id}/fix"): Rule(
        each(401, 404, 403, 403, 422, 422), _group, lambda ws: {"values": {}}
    ),
    ("GET", "/w/{ws}/reconciliation/runs"): Rule(READS),
    ("GET", "/w/{ws}/reconciliation/runs/{run_id}"): Rule(READS, _run),
    # Reconciling is finance's (or an admin's); a flow without DotDigital fails at once.
    ("POST", "/w/{ws}/flows/{flow_id}/reconciliation/runs"): Rule(
        each(401, 404, 403, 403, 202, 202), _flow, lambda ws: {}, owner="finance"
    ),
    ("GET", "/w/{ws}/alerts"): Rule(READS),
    ("GET", "/w/{ws}/alerts/{alert_id}"): Rule(READS, _alert),
    ("POST", "/w/{ws}/alerts/{alert_id}/acknowledge"): Rule(TEAM_ACTS, _alert, lambda ws: {}),
}


def api_routes() -> set[tuple[str, str]]:
    routes = set()
    for prefix, router in api._routers:
        for path, view in router.path_operations.items():
            for operation in view.operations:
                for method in operation.methods:
                    routes.add((method, (prefix + path).replace("//", "/")))
    return routes


def test_every_api_route_has_a_rule():
    routes = {(m, p if p.startswith("/") else "/" + p) for m, p in api_routes()}
    assert routes == set(RULES)


def callers(world, owner: str) -> dict[str, str | None]:
    other_team = "marketing" if owner != "marketing" else "ops"
    return {
        "anon": None,
        "outsider": make_key(world.other, team=None)[1],
        "read": make_key(world.workspace, team=owner, scope="read")[1],
        "other_team": make_key(world.workspace, team=other_team)[1],
        "team": make_key(world.workspace, team=owner)[1],
        "admin": make_key(world.workspace, team=None)[1],
    }


@pytest.mark.parametrize("route", sorted(RULES), ids=lambda r: f"{r[0]} {r[1]}")
def test_api_authorization_matrix(route, world):
    method, template = route
    rule = RULES[route]
    failures = []
    for caller, key in callers(world, rule.owner).items():
        url = "/api/v1" + template.format(ws=world.workspace.slug, **rule.target(world.workspace))
        client = KeyClient(key)
        if method == "GET":
            response = client.get(url)
        else:
            response = client.post_json(url, rule.body(world.workspace) if rule.body else {})
        expected = rule.expected[caller]
        if response.status_code != expected:
            failures.append(
                f"{method} {url} as {caller}: {response.status_code}, expected "
                f"{expected}: {response.content[:200]!r}"
            )
        elif expected >= 400:
            assert set(response.json()) >= {"error", "detail"}, response.content
    assert not failures, "\n".join(failures)
