"""The API's rows of the page authorization table (merged into tests/authz.py).

A signed-in session opens no API route: the API takes keys only (401 for everyone; its own matrix
of keys is tests/api/test_authorization.py). The OpenAPI document and its docs page are public.
The keys page: every member reads it, admins make and revoke keys, outsiders get 404.
"""

from __future__ import annotations

from typing import Any

from tests.authz import LOGIN, WORKSPACE_PAGE, Rule, each

NO_SESSION = each(401, 401, 401, 401, 401)
NOT_THIS_METHOD = each(405, 405, 405, 405, 405)
PUBLIC = each(200, 200, 200, 200, 200)
ACTIONS = ("assign comment acknowledge snooze unsnooze resolve ignore reopen retry fix").split()  # noqa: SIM905


def _ws(world: Any) -> dict[str, Any]:
    return {"ws": world.workspace.slug}


def _with(name: str) -> Any:
    return lambda world: {"ws": world.workspace.slug, name: 1}


def _key(world: Any) -> dict[str, Any]:
    from tests.api.support import make_key

    return {"ws": world.workspace.slug, "pk": make_key(world.workspace)[0].pk}


RULES: dict[str, Rule] = {
    "api:keys": Rule(
        get=WORKSPACE_PAGE,
        post=each(LOGIN, 404, 403, 403, 200),
        post_data=lambda world: {"name": "Zendesk", "team": "", "scope": "read"},
    ),
    "api:key-revoke": Rule(
        get=each(LOGIN, 405, 405, 405, 405), post=each(LOGIN, 404, 403, 403, 302), kwargs=_key
    ),
    # The API's root names nothing: the document and its docs page are beside it.
    "api-v1:api-root": Rule(
        get=each(404, 404, 404, 404, 404), post=each(404, 404, 404, 404, 404), kwargs=lambda w: {}
    ),
    "api-v1:openapi-json": Rule(get=PUBLIC, post=NOT_THIS_METHOD, kwargs=lambda world: {}),
    "api-v1:openapi-view": Rule(get=PUBLIC, post=NOT_THIS_METHOD, kwargs=lambda world: {}),
    "api-v1:list_flows": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_ws),
    "api-v1:list_events": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_ws),
    "api-v1:get_event": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_with("event_id")),
    "api-v1:list_groups": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_ws),
    "api-v1:get_group": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_with("group_id")),
    "api-v1:list_runs": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_ws),
    "api-v1:get_run": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_with("run_id")),
    "api-v1:start_run": Rule(get=NOT_THIS_METHOD, post=NO_SESSION, kwargs=_with("flow_id")),
    "api-v1:list_alerts": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_ws),
    "api-v1:get_alert": Rule(get=NO_SESSION, post=NOT_THIS_METHOD, kwargs=_with("alert_id")),
    "api-v1:acknowledge_alert": Rule(
        get=NOT_THIS_METHOD, post=NO_SESSION, kwargs=_with("alert_id")
    ),
    **{
        f"api-v1:{action}_group": Rule(
            get=NOT_THIS_METHOD, post=NO_SESSION, kwargs=_with("group_id")
        )
        for action in ACTIONS
    },
}
