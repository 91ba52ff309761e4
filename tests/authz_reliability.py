"""Authorization rows of the privacy page (merged into tests/authz.py): admins only."""

from __future__ import annotations

from typing import Any

from tests.authz import LOGIN, Rule, each


def _erasure(world: Any) -> dict[str, Any]:
    return {"email": "nobody@example.com", "confirm": "on"}


RULES: dict[str, Rule] = {
    "reliability:privacy": Rule(
        get=each(LOGIN, 404, 403, 403, 200),
        post=each(LOGIN, 404, 403, 403, 302),
        post_data=_erasure,
    ),
}
