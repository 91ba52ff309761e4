"""Making, revoking and checking API keys, and what a key may do (the permissions of its team).

A key is `sdk_` and 43 URL-safe characters; only its SHA-256 digest is kept (the key is random, so
no salt or slow hash is needed, as for the webhook tokens). A key acts through the same
`WorkspaceAccess` and `InboxScope` a person's request builds, from its team instead of a
membership: a key without a team acts as a workspace admin.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import audit
from accounts.access import WorkspaceAccess
from accounts.models import ConfigChange, Membership, Team, Workspace
from api.models import ApiKey
from exceptions_inbox.listing import InboxScope

PREFIX = "sdk_"
AUDITED = ("name", "team", "scope", "revoked_at")
# last_used_at is written at most this often per key: a busy integration is not a write a call.
USED_EVERY = timedelta(minutes=1)


class NameTaken(ValueError):
    """Another person or workspace's key already goes by this name."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def actor_for(workspace: Workspace, name: str) -> User:
    """The inactive user history rows name for keys called `name` in the workspace (one for a
    key and the keys that replace it under the same name). Raises NameTaken when the name is a
    person's username or another workspace's key."""
    earlier = ApiKey.objects.filter(workspace=workspace, name=name).select_related("actor").first()
    if earlier is not None:
        return earlier.actor
    if User.objects.filter(username=name).exists():
        raise NameTaken(f"{name!r} is already the name of a person or of another workspace's key.")
    user = User(username=name, is_active=False)
    user.set_unusable_password()
    user.save()
    return user


def issue_key(
    workspace: Workspace, name: str, team: Team | None, scope: str, created_by: User
) -> tuple[ApiKey, str]:
    """A new key (audited); returns the row and the key itself, to show once."""
    key = PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        row = ApiKey.objects.create(
            workspace=workspace,
            name=name,
            team=team,
            scope=scope,
            prefix=key[:12],
            digest=digest(key),
            actor=actor_for(workspace, name),
            created_by=created_by,
        )
        audit.record_change(
            workspace,
            created_by,
            row,
            ConfigChange.Action.CREATED,
            None,
            audit.snapshot(row, AUDITED),
        )
    return row, key


def revoke_key(row: ApiKey, actor: User) -> bool:
    """Revoke the key at once (audited); False when it already was."""
    before = audit.snapshot(row, AUDITED)
    with transaction.atomic():
        now = timezone.now()
        if not ApiKey.objects.filter(pk=row.pk, revoked_at__isnull=True).update(revoked_at=now):
            return False
        row.revoked_at = now
        audit.record_change(
            row.workspace,
            actor,
            row,
            ConfigChange.Action.CHANGED,
            before,
            audit.snapshot(row, AUDITED),
            note="Revoked",
        )
    return True


def find_key(key: str) -> ApiKey | None:
    """The key's row (revoked or not), or None for a key Syncdesk never made."""
    if not key.startswith(PREFIX) or len(key) > 100:
        return None
    return (
        ApiKey.objects.select_related("workspace", "team", "actor")
        .filter(digest=digest(key))
        .first()
    )


def mark_used(row: ApiKey) -> None:
    now = timezone.now()
    ApiKey.objects.filter(pk=row.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - USED_EVERY)
    ).update(last_used_at=now)


@dataclass(frozen=True)
class KeyAccess:
    """What a key may do in its workspace, as the pages' access objects say it for a person."""

    key: ApiKey
    access: WorkspaceAccess
    scope: InboxScope

    @property
    def workspace(self) -> Workspace:
        return self.key.workspace


def access_for(row: ApiKey) -> KeyAccess:
    """The key's permissions: its team's, or a workspace admin's when it has no team. The
    membership is not saved: a key is no member (it is never offered as an assignee)."""
    role = Membership.Role.MEMBER if row.team_id else Membership.Role.ADMIN
    membership = Membership(workspace=row.workspace, user=row.actor, role=role)
    team_slugs = frozenset({row.team.slug}) if row.team else frozenset()
    access = WorkspaceAccess(row.workspace, membership, team_slugs)
    team_ids = frozenset({row.team_id}) if row.team_id else frozenset()
    scope = InboxScope(row.actor, {row.workspace_id: access}, team_ids)
    return KeyAccess(row, access, scope)
