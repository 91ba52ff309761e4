"""Outbound webhooks' rows of the authorization table (merged into tests/authz.py).

Every member reads the list and a webhook's page; only admins create, edit, pause, resume, test,
reveal the secret and delete (403 inside, 404 outside). The edit page is an admin's form only.
"""

from __future__ import annotations

from typing import Any

from tests.authz import ADMIN_FORM_POST, GET_ONLY, LOGIN, WORKSPACE_PAGE, Rule, each

POST_ONLY = each(LOGIN, 405, 405, 405, 405)
ADMIN_PAGE = each(LOGIN, 404, 403, 403, 200)


def _subscription(world: Any) -> dict[str, Any]:
    from tests.outbound.conftest import subscribe

    return {
        "ws": world.workspace.slug,
        "pk": subscribe(world.workspace, "https://example.com/h").pk,
    }


def _form(world: Any) -> dict[str, Any]:
    return {"name": "Jira", "url": "https://example.com/hook", "events": ["group.opened"]}


RULES: dict[str, Rule] = {
    "outbound:list": Rule(get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, post_data=_form),
    "outbound:detail": Rule(get=WORKSPACE_PAGE, post=GET_ONLY, kwargs=_subscription),
    "outbound:edit": Rule(
        get=ADMIN_PAGE, post=ADMIN_FORM_POST, kwargs=_subscription, post_data=_form
    ),
    "outbound:pause": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_subscription),
    "outbound:resume": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_subscription),
    "outbound:test": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_subscription),
    "outbound:delete": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_subscription),
    # The secret is answered on the page itself (200), never through a redirect.
    "outbound:secret": Rule(
        get=POST_ONLY, post=each(LOGIN, 404, 403, 403, 200), kwargs=_subscription
    ),
}
