"""Authorization rows for connectors' pages (merged into tests/authz.py's RULES)."""

from __future__ import annotations

from tests.authz import GET_ONLY, WORKSPACE_PAGE, Rule

RULES = {
    "connectors:setup": Rule(
        get=WORKSPACE_PAGE,
        post=GET_ONLY,
        kwargs=lambda world: {"ws": world.workspace.slug, "kind": "canonical"},
    ),
}
