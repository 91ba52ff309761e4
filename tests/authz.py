"""The authorization table: for every URL name, what each persona gets for GET and POST.

Personas: anon (signed out), outsider (member of another workspace only), member (in the
workspace, in no team), teammate (in the owning team, ops unless an entry says otherwise), admin
(the workspace's admin). Every URL in the URLconf must have an entry: the matrix test fails on a
URL without one, so a new view cannot ship without saying who may use it.

Entries are built with small helpers so each row reads as a rule rather than a row of numbers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERSONAS = ("anon", "outsider", "member", "teammate", "admin")
LOGIN = "login"  # a redirect to the sign-in page


@dataclass(frozen=True)
class Rule:
    get: dict[str, int | str]
    post: dict[str, int | str]
    kwargs: Callable[[Any], dict[str, Any]] = field(
        default=lambda world: {"ws": world.workspace.slug}
    )
    post_data: Callable[[Any], dict[str, Any]] = field(default=lambda world: {})


def each(
    anon: int | str, outsider: int, member: int, teammate: int, admin: int
) -> dict[str, int | str]:
    return {
        "anon": anon,
        "outsider": outsider,
        "member": member,
        "teammate": teammate,
        "admin": admin,
    }


# Shapes that recur.
WORKSPACE_PAGE = each(LOGIN, 404, 200, 200, 200)  # any member reads; outsiders get 404
GET_ONLY = each(LOGIN, 405, 405, 405, 405)  # POST to a read-only page
ADMIN_FORM_POST = each(LOGIN, 404, 403, 403, 302)  # only admins change configuration


def _team_change(world: Any) -> dict[str, Any]:
    return {"action": "add", "team": "finance", "user": world.member.pk}


RULES: dict[str, Rule] = {
    "home": Rule(
        get=each(LOGIN, 302, 302, 302, 302),  # one workspace each: straight into it
        post=GET_ONLY,
        kwargs=lambda world: {},
    ),
    "login": Rule(
        get=each(200, 302, 302, 302, 302),  # signed in already: sent on
        post=each(200, 302, 302, 302, 302),  # an empty form re-renders with errors
        kwargs=lambda world: {},
    ),
    "logout": Rule(
        get=each(LOGIN, 405, 405, 405, 405),
        post=each(302, 302, 302, 302, 302),
        kwargs=lambda world: {},
    ),
    "healthz": Rule(
        get=each(200, 200, 200, 200, 200),
        post=each(405, 405, 405, 405, 405),
        kwargs=lambda world: {},
    ),
    "monitoring:overview": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "monitoring:flows": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "monitoring:events": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "monitoring:configuration": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "exceptions_inbox:inbox": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "accounts:teams": Rule(get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, post_data=_team_change),
}

# Namespaces tested elsewhere: the Django admin is superuser-only (tests/accounts/test_admin.py).
EXEMPT_NAMESPACES = ("admin",)

# Each app's rows live in tests/authz_<app>.py (RULES there), merged here, so that work on one app
# never edits another's rows.
for _module in sorted(Path(__file__).parent.glob("authz_*.py")):
    _rules = importlib.import_module(f"tests.{_module.stem}").RULES
    _clash = set(_rules) & set(RULES)
    assert not _clash, f"{_module.name} redefines {_clash}"
    RULES.update(_rules)
