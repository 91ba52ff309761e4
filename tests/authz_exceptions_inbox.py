"""Authorization rows for the inbox (merged into tests/authz.py's table).

The group in each row is an ops-owned SKU gap in the world's workspace: every member sees it, the
ops teammate and the admin change it, the plain member gets 403 and the outsider 404. A repeated
POST by the admin (after the teammate's) is reported as not applied (302), not an error.
"""

from __future__ import annotations

from typing import Any

from tests.authz import GET_ONLY, LOGIN, WORKSPACE_PAGE, Rule, each
from tests.exceptions_inbox.factories import make_group

TEAM_POST = each(LOGIN, 404, 403, 302, 302)  # the owning team or an admin changes a group
POST_ONLY = each(LOGIN, 405, 405, 405, 405)


def _group(world: Any) -> dict[str, Any]:
    return {"ws": world.workspace.slug, "pk": make_group(world.workspace).pk}


def _assign(world: Any) -> dict[str, Any]:
    return {"action": "assign", "assignee": world.teammate.pk}


def _bulk_assign(world: Any) -> dict[str, Any]:
    group = make_group(world.workspace, sku="BULK-1")
    return {"action": "assign", "assignee": world.teammate.pk, "groups": [group.pk]}


RULES: dict[str, Rule] = {
    # Everyone signed in has an inbox across their workspaces (the outsider sees only their own).
    "exceptions_inbox:all": Rule(
        get=each(LOGIN, 200, 200, 200, 200), post=GET_ONLY, kwargs=lambda world: {}
    ),
    # The bulk bar across workspaces: the group is not in the outsider's workspaces (404).
    "exceptions_inbox:all-bulk": Rule(
        get=POST_ONLY, post=TEAM_POST, kwargs=lambda world: {}, post_data=_bulk_assign
    ),
    "exceptions_inbox:bulk": Rule(get=POST_ONLY, post=TEAM_POST, post_data=_bulk_assign),
    "exceptions_inbox:group": Rule(get=WORKSPACE_PAGE, post=GET_ONLY, kwargs=_group),
    "exceptions_inbox:group-action": Rule(
        get=POST_ONLY, post=TEAM_POST, kwargs=_group, post_data=_assign
    ),
    # Any member may comment: a comment changes nothing.
    "exceptions_inbox:group-comment": Rule(
        get=POST_ONLY,
        post=each(LOGIN, 404, 302, 302, 302),
        kwargs=_group,
        post_data=lambda world: {"note": "Checked with the warehouse."},
    ),
    # An empty fix is a form error (400) for those who may fix; refused before that for others.
    "exceptions_inbox:group-fix": Rule(
        get=POST_ONLY, post=each(LOGIN, 404, 403, 400, 400), kwargs=_group
    ),
}
