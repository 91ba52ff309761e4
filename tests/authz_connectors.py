"""Authorization rows for connectors' pages (merged into tests/authz.py's RULES)."""

from __future__ import annotations

from typing import Any

from tests.authz import ADMIN_FORM_POST, GET_ONLY, LOGIN, WORKSPACE_PAGE, Rule, each
from tests.factories import make_connection

ADMIN_ONLY_FORM = each(LOGIN, 404, 403, 403, 200)  # the form itself is for admins only


def _connection(world: Any, kind: str = "canonical") -> dict[str, Any]:
    conn = make_connection(world.workspace, kind, name=f"authz {kind}")
    return {"ws": world.workspace.slug, "pk": conn.pk}


def _new_canonical(world: Any) -> dict[str, Any]:
    return {"name": "From the matrix"}


def _edit_canonical(world: Any) -> dict[str, Any]:
    return {"name": "Renamed by the matrix"}


RULES = {
    "connectors:setup": Rule(
        get=WORKSPACE_PAGE,
        post=GET_ONLY,
        kwargs=lambda world: {"ws": world.workspace.slug, "kind": "canonical"},
    ),
    "connectors:list": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "connectors:create": Rule(
        get=ADMIN_ONLY_FORM,
        post=ADMIN_FORM_POST,
        kwargs=lambda world: {"ws": world.workspace.slug, "kind": "canonical"},
        post_data=_new_canonical,
    ),
    "connectors:detail": Rule(get=WORKSPACE_PAGE, post=GET_ONLY, kwargs=_connection),
    "connectors:edit": Rule(
        get=ADMIN_ONLY_FORM, post=ADMIN_FORM_POST, kwargs=_connection, post_data=_edit_canonical
    ),
    # A canonical connection's test needs no outside system: it answers at once.
    "connectors:test": Rule(
        get=each(LOGIN, 405, 405, 405, 405), post=ADMIN_FORM_POST, kwargs=_connection
    ),
    "connectors:rotate-token": Rule(
        get=each(LOGIN, 405, 405, 405, 405), post=ADMIN_FORM_POST, kwargs=_connection
    ),
}
