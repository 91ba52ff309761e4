"""Fix once, release many: a kind's fix action (e.g. add a SKU alias) and its suggestions.

The fix itself is the engine's (`fix` hook): it changes its configuration and retries every event
that cause blocked, in this group and any other; `clear_occurrences` then resolves the groups left
with nothing blocking. The inbox records who fixed what, and ranks the `suggest` hook's candidates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from rapidfuzz import fuzz, process, utils

from exceptions_inbox.actions import IllegalAction
from exceptions_inbox.kinds import Suggestion
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence

if TYPE_CHECKING:
    from django.contrib.auth.models import User


SHOWN = 5  # suggestions for a group of one subject
PER_SUBJECT = 3  # each, for a group of several (a flow's unknown SKUs)
SUBJECTS_SHOWN = 10  # the subjects with the most blocked events; the rest after those are fixed


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


def fix_subjects(group: ExceptionGroup, limit: int = SUBJECTS_SHOWN) -> list[tuple[str, int]]:
    """What the fix is applied to, each with the events it blocks, most first: the group's own
    SKU, or in a group per flow each unknown SKU of its blocking occurrences."""
    if group.sku:
        return [(group.sku, group.open_count)]
    rows = (
        Occurrence.objects.filter(group=group, state=Occurrence.State.OPEN)
        .exclude(sku="")
        .values_list("sku")
        .annotate(n=Count("pk"))
        .order_by("-n", "sku")[:limit]
    )
    found = [(sku, n) for sku, n in rows]
    if not found and group.subject_label:
        return [(group.subject_label, group.open_count)]
    return found


def suggestions(group: ExceptionGroup, subjects: list[str] | None = None) -> list[Suggestion]:
    """The `suggest` hook's candidates nearest each fix subject (e.g. the products an unknown
    SKU may stand for), best first within each subject, the subjects in `fix_subjects` order.
    Ranked `Suggestion`s from the engine keep their order; plain strings are ranked here by
    spelling. Empty when the engine suggests nothing."""
    hook = group.kind_info.suggest
    if hook is None:
        return []
    if subjects is None:
        subjects = [value for value, _n in fix_subjects(group)]
    offered = [c for c in hook(group) if c]
    first = subjects[0] if subjects else ""
    ranked = [
        s if s.for_value else replace(s, for_value=first)
        for s in offered
        if isinstance(s, Suggestion)
    ]
    strings = [c for c in offered if isinstance(c, str)]
    each = PER_SUBJECT if len(subjects) > 1 else SHOWN
    for subject in subjects if strings else []:
        ranked += [
            Suggestion(value=choice, closeness=round(score), for_value=subject)
            for choice, score, _index in process.extract(
                subject,
                strings,
                scorer=fuzz.WRatio,
                processor=utils.default_process,
                limit=each,
                score_cutoff=50,
            )
        ]
    if strings and not subjects:
        ranked += [Suggestion(value=s, closeness=0) for s in strings[:SHOWN]]
    order = {subject: n for n, subject in enumerate(subjects)}
    # Stable: among equals, the engine's (or rapidfuzz's) order stands.
    ranked.sort(key=lambda s: (order.get(s.for_value, len(order)), -s.closeness))
    kept: list[Suggestion] = []
    for s in ranked:
        if sum(1 for k in kept if k.for_value == s.for_value) < each:
            kept.append(s)
    return kept


def one_click(suggestion: Suggestion) -> bool:
    """Close enough to apply in one click (`INBOX_ONE_CLICK_CLOSENESS`); a less close one is
    shown for a person to judge and type in."""
    return suggestion.closeness >= settings.INBOX_ONE_CLICK_CLOSENESS
