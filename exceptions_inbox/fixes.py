"""Fix once, release many: a kind's fix action (e.g. add a SKU alias) and its suggestions.

The fix itself is the engine's (`fix` hook): it changes its configuration and retries every event
that cause blocked, in this group and any other; `clear_occurrences` then resolves the groups left
with nothing blocking. The inbox records who fixed what, and ranks the `suggest` hook's candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction
from rapidfuzz import fuzz, process, utils

from exceptions_inbox.actions import IllegalAction
from exceptions_inbox.models import Activity, ExceptionGroup

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def why_no_fix(group: ExceptionGroup) -> str | None:
    kind = group.kind_info
    if kind.fix is None:
        return "Syncdesk has no fix for this kind of exception yet"
    if group.is_closed:
        return f"it is {group.get_state_display().lower()}"
    return None


def apply_fix(group: ExceptionGroup, actor: User, data: dict[str, Any]) -> str:
    """Run the kind's fix hook and record it. Returns the engine's message for the person.

    Raises IllegalAction when there is no fix or the group is closed, and ValueError (from the
    hook) when the engine refuses the data; nothing is recorded then.
    """
    reason = why_no_fix(group)
    if reason:
        raise IllegalAction(f"Cannot fix: {reason}.")
    hook = group.kind_info.fix
    assert hook is not None
    with transaction.atomic():
        # Written first so the history reads "fixed" before what the fix set off (the retry's
        # auto-resolve); a refused fix rolls it back.
        activity = Activity.objects.create(
            group=group, kind=Activity.Kind.FIXED, actor=actor, after={"fix": data}
        )
        message = hook(group, data, actor)
        Activity.objects.filter(pk=activity.pk).update(note=message)
    group.refresh_from_db()
    return message


def suggestions(group: ExceptionGroup, limit: int = 5) -> list[str]:
    """The `suggest` hook's candidates nearest the group's subject (e.g. catalogue SKUs nearest
    an unknown SKU), best first. Empty when the engine suggests nothing."""
    hook = group.kind_info.suggest
    if hook is None:
        return []
    candidates = [c for c in hook(group) if c]
    subject = group.sku or group.subject_label or group.subject_key
    if not subject or not candidates:
        return candidates[:limit]
    ranked = process.extract(
        subject,
        candidates,
        scorer=fuzz.WRatio,
        processor=utils.default_process,
        limit=limit,
        score_cutoff=50,
    )
    return [choice for choice, _score, _index in ranked]
