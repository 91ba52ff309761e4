"""Keys for API tests, made the way the keys page makes them, and a client that sends one."""

from __future__ import annotations

import itertools
from typing import Any

from django.test import Client

from accounts.models import Workspace
from api import keys
from api.models import ApiKey
from tests.factories import make_member

_seq = itertools.count(1)


def make_key(
    workspace: Workspace, *, team: str | None = "ops", scope: str = "act", name: str | None = None
) -> tuple[ApiKey, str]:
    """A key of `workspace` acting for `team` (None: as an admin), made by one of its admins."""
    admin = make_member(workspace, f"keymaker{next(_seq)}", role="admin")
    row, key = keys.issue_key(
        workspace,
        name or f"Integration {next(_seq)}",
        workspace.teams.get(slug=team) if team else None,
        scope,
        admin,
    )
    return row, key


class KeyClient(Client):
    """A test client sending `Authorization: Bearer <key>` with every request (none for None)."""

    def __init__(self, key: str | None, **defaults: Any) -> None:
        if key is not None:
            defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        super().__init__(**defaults)

    def post_json(self, path: str, data: Any = None) -> Any:
        return self.post(path, data if data is not None else {}, content_type="application/json")
