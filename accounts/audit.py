"""The audit of configuration changes: one `ConfigChange` row per change, with a before/after diff.

    before = audit.snapshot(connection, FIELDS, secret_fields=SECRETS)
    ...change and save it...
    audit.record_change(workspace, request.user, connection, ConfigChange.Action.CHANGED,
                        before, audit.snapshot(connection, FIELDS, secret_fields=SECRETS),
                        secret_fields=SECRETS)

A snapshot is a flat ``{field: value}`` dict of JSON values; a dict-valued field (credentials,
options) is flattened into ``field.key`` entries, so a diff names the one key that changed. A
secret field's value never leaves `snapshot`: it becomes a `Hidden` keyed digest, enough to tell
whether it changed and nothing more, and the stored diff says only that it changed. Any app may
call this (accounts imports no other app; the object is named by type, id and label).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.urls import reverse

from accounts.models import ConfigChange, Workspace

CHANGED = "changed"
MAX_VALUE_CHARS = 500


@dataclass(frozen=True)
class Hidden:
    """A secret's stand-in: a digest keyed with SECRET_KEY (equal values, equal digests)."""

    digest: str

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


def hide(value: Any) -> Hidden | None:
    """None for an empty secret, else its keyed digest."""
    if value in (None, ""):
        return None
    if isinstance(value, Hidden):
        return value
    key = settings.SECRET_KEY.encode()
    return Hidden(hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest())


def is_secret(field: str, secret_fields: Iterable[str]) -> bool:
    """`credentials` covers `credentials.password`; `credentials.password` covers only itself."""
    return any(field == s or field.startswith(s + ".") for s in secret_fields)


def jsonable(value: Any) -> Any:
    """A value as it is shown and stored in a diff."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def flatten(values: Mapping[str, Any], secret_fields: Iterable[str] = ()) -> dict[str, Any]:
    """``{"options": {"a": 1}}`` → ``{"options.a": 1}``, secrets replaced by `Hidden`."""
    secret_fields = tuple(secret_fields)
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping) and not isinstance(value, Hidden):
            for key, inner in value.items():
                flat[f"{name}.{key}"] = inner
        else:
            flat[name] = value
    return {
        name: hide(value) if is_secret(name, secret_fields) else jsonable(value)
        for name, value in flat.items()
    }


def snapshot(
    instance: models.Model, fields: Iterable[str], *, secret_fields: Iterable[str] = ()
) -> dict[str, Any]:
    """The named fields of `instance`, flattened, with secret values hidden.

    A foreign key is shown by its object's str; a many-to-many field by its members' strs, sorted.
    """
    values: dict[str, Any] = {}
    for name in fields:
        field = instance._meta.get_field(name)
        if field.many_to_many:
            values[name] = sorted(str(o) for o in getattr(instance, name).all())
        elif field.is_relation:
            values[name] = getattr(instance, name)
        else:
            values[name] = getattr(instance, name)
    return flatten(values, secret_fields)


def diff(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    secret_fields: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The fields that differ, in order: ``{"field", "before", "after"}``, or for a secret
    ``{"field", "secret": true}`` (no value, before or after, ever)."""
    secret_fields = tuple(secret_fields)
    old = flatten(before or {}, secret_fields)
    new = flatten(after or {}, secret_fields)
    changes: list[dict[str, Any]] = []
    for name in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if is_secret(name, secret_fields) or isinstance(a, Hidden) or isinstance(b, Hidden):
            changes.append({"field": name, "secret": True})
        else:
            changes.append({"field": name, "before": a, "after": b})
    return changes


def _target(obj_or_label: models.Model | str) -> tuple[str, str, str]:
    if isinstance(obj_or_label, models.Model):
        meta = obj_or_label._meta
        return f"{meta.app_label}.{meta.model_name}", str(obj_or_label.pk), str(obj_or_label)
    return "", "", obj_or_label


# -- where each audited object is shown ----------------------------------------------------------
#
# Each app registers, per object type it audits, how to find the object's page from a history row
# (accounts imports no other app, so it cannot know their URLs or models). A resolver gets the row
# and returns the page's URL: the object's own page while it exists, else the page listing its
# kind (a deleted mapping's flow, the aliases page...). Rows of an unregistered type have no link.

ObjectPage = Callable[[ConfigChange], str | None]
OBJECT_PAGES: dict[str, ObjectPage] = {}


def register_object_page(object_type: str, resolve: ObjectPage) -> None:
    OBJECT_PAGES[object_type] = resolve


def object_url(change: ConfigChange) -> str | None:
    """The page of the row's object (or of its kind, once it is gone); None when unknown."""
    resolve = OBJECT_PAGES.get(change.object_type)
    return resolve(change) if resolve is not None else None


def _team_page(change: ConfigChange) -> str:
    return reverse("accounts:teams", kwargs={"ws": change.workspace.slug})


register_object_page("accounts.team", _team_page)


def record_change(
    workspace: Workspace,
    actor: Any,
    obj_or_label: models.Model | str,
    action: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    *,
    secret_fields: Iterable[str] = (),
    note: str = "",
    always: bool | None = None,
    object_type: str = "",
    object_id: str | int = "",
) -> ConfigChange | None:
    """Write one audit row, unless nothing changed.

    `actor` is a user (None or an anonymous user: Syncdesk itself). `before`/`after` are
    snapshots (or any flat or nested dicts; secrets named in `secret_fields` are hidden here
    too). An empty diff writes nothing and returns None unless `always` (by default: for every
    action but CHANGED, since "created", "tested" or "rotated" are news without a diff).
    An object that is not a row of ours (a DotDigital list) is named by a label, with an
    `object_type` (e.g. "dotdigital.list") and `object_id` for its page (`object_url`).
    """
    changes = diff(before, after, secret_fields)
    if always is None:
        always = action != ConfigChange.Action.CHANGED
    if not changes and not always:
        return None
    found_type, found_id, label = _target(obj_or_label)
    object_type, object_id = found_type or object_type, found_id or str(object_id)
    user = actor if getattr(actor, "is_authenticated", False) else None
    return ConfigChange.objects.create(
        workspace=workspace,
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_label=label[:200],
        changes=[_clip(c) for c in changes],
        note=note,
    )


def _clip(change: dict[str, Any]) -> dict[str, Any]:
    for side in ("before", "after"):
        value = change.get(side)
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            change[side] = value[:MAX_VALUE_CHARS] + "…"
    return change


def history_of(obj: models.Model) -> models.QuerySet[ConfigChange]:
    """The audit rows of one object, newest first (for its page)."""
    object_type, object_id, _ = _target(obj)
    workspace_id = getattr(obj, "workspace_id", None)
    qs = ConfigChange.objects.filter(object_type=object_type, object_id=object_id)
    if workspace_id is not None:
        qs = qs.filter(workspace_id=workspace_id)
    return qs.select_related("actor")
