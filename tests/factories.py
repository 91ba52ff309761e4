"""Plain factory functions for tests (no factory library: each is a few lines)."""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth.models import User

from accounts.models import Membership, Workspace
from connectors.models import Connection

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


def make_user(username: str | None = None, **extra: object) -> User:
    username = username or f"user{next(_seq)}"
    return User.objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, **extra
    )


def make_workspace(slug: str | None = None, **extra: object) -> Workspace:
    slug = slug or f"ws{next(_seq)}"
    return Workspace.objects.create(name=slug.title(), slug=slug, **extra)


def make_member(
    workspace: Workspace, username: str | None = None, *, role: str = "member", teams=()
) -> User:
    user = make_user(username)
    workspace.add_member(user, role=role, teams=tuple(teams))
    return user


def make_connection(workspace: Workspace, kind: str = "dotdigital", **extra: Any) -> Connection:
    name = str(extra.pop("name", f"{kind} {next(_seq)}"))
    return Connection.objects.create(workspace=workspace, kind=kind, name=name, **extra)


__all__ = [
    "PASSWORD",
    "Membership",
    "make_connection",
    "make_member",
    "make_user",
    "make_workspace",
]
