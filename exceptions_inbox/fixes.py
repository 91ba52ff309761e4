"""Fix once, release many: a kind's fix action (e.g. add a SKU alias) and its suggestions.

The fix itself is the engine's (`fix` hook): it changes its configuration and retries every event
that cause blocked, in this group and any other; `clear_occurrences` then resolves the groups left
with nothing blocking. The inbox records who fixed what, and ranks the `suggest` hook's candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from rapidfuzz import fuzz, process, utils

from exceptions_inbox.actions import IllegalAction
from exceptions_inbox.kinds import Suggestion
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


def suggestions(group: ExceptionGroup, limit: int = 5) -> list[Suggestion]:
    """The `suggest` hook's candidates nearest the group's subject (e.g. the products an unknown
    SKU may stand for), best first. Ranked `Suggestion`s from the engine keep their order; plain
    strings are ranked here by spelling. Empty when the engine suggests nothing."""
    hook = group.kind_info.suggest
    if hook is None:
        return []
    offered = [c for c in hook(group) if c]
    ranked = [c for c in offered if isinstance(c, Suggestion)]
    strings = [c for c in offered if isinstance(c, str)]
    subject = group.sku or group.subject_label or group.subject_key
    if strings and subject:
        ranked += [
            Suggestion(value=choice, closeness=round(score))
            for choice, score, _index in process.extract(
                subject,
                strings,
                scorer=fuzz.WRatio,
                processor=utils.default_process,
                limit=limit,
                score_cutoff=50,
            )
        ]
    elif strings:
        ranked += [Suggestion(value=s, closeness=0) for s in strings]
    # Stable: among equals, the engine's (or rapidfuzz's) order stands.
    ranked.sort(key=lambda s: -s.closeness)
    return ranked[:limit]


def one_click(suggestion: Suggestion) -> bool:
    """Close enough to apply in one click (`INBOX_ONE_CLICK_CLOSENESS`); a less close one is
    shown for a person to judge and type in."""
    return suggestion.closeness >= settings.INBOX_ONE_CLICK_CLOSENESS
