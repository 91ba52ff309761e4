"""Monitoring's rows of the authorization table (merged into tests/authz.py).

Every member reads the monitoring pages; an alert is acknowledged by its owning team (ops here,
the teammate's team) or an admin; a reconciliation difference is repaired by its team (made
ops-owned here) or an admin; reconciling on demand is finance's (or an admin's): the ops teammate
gets 403; a flow's opt-out webhook is set by an admin only. Outsiders get 404. /metrics answers 404 to everyone without the bearer token.
"""

from __future__ import annotations

from typing import Any

from tests.authz import GET_ONLY, LOGIN, WORKSPACE_PAGE, Rule, each

POST_ONLY = each(LOGIN, 405, 405, 405, 405)
TEAM_POST = each(LOGIN, 404, 403, 302, 302)


def _alert(world: Any) -> dict[str, Any]:
    from tests.monitoring.watch_support import make_alert

    return {"ws": world.workspace.slug, "pk": make_alert(world.workspace).pk}


def _flow(world: Any) -> dict[str, Any]:
    from tests.monitoring.watch_support import make_flow

    return {"ws": world.workspace.slug, "flow": make_flow(world.workspace, destination=False).pk}


def _run(world: Any) -> dict[str, Any]:
    from tests.monitoring.watch_support import make_difference

    return {"ws": world.workspace.slug, "pk": make_difference(world.workspace).run_id}


def _difference(world: Any) -> dict[str, Any]:
    from tests.monitoring.watch_support import make_difference

    return {"ws": world.workspace.slug, "pk": make_difference(world.workspace, team="ops").pk}


RULES: dict[str, Rule] = {
    "watch:metrics": Rule(
        get=each(404, 404, 404, 404, 404),
        post=each(405, 405, 405, 405, 405),
        kwargs=lambda world: {},
    ),
    "watch:alerts": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "watch:alert-ack": Rule(get=POST_ONLY, post=TEAM_POST, kwargs=_alert),
    "watch:runs": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    # A flow without a DotDigital connection: the run fails at once (no network), then redirects.
    "watch:run-now": Rule(get=POST_ONLY, post=each(LOGIN, 404, 403, 403, 302), kwargs=_flow),
    "watch:run": Rule(get=WORKSPACE_PAGE, post=GET_ONLY, kwargs=_run),
    "watch:repair": Rule(get=POST_ONLY, post=TEAM_POST, kwargs=_difference),
    "watch:opt-outs": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "watch:opt-out-webhook": Rule(
        get=POST_ONLY,
        post=each(LOGIN, 404, 403, 403, 302),
        kwargs=_flow,
        post_data=lambda world: {"url": "https://example.com/optouts"},
    ),
}
