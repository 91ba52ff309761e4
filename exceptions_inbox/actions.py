"""Every change a person (or Syncdesk itself) makes to an exception group goes through here.

`apply_action(group, action, actor, **params)` is the one entry point used by the group page, the
bulk bar and the tasks (the snooze sweeper). It checks the transition under a row lock, writes the
group's fields together, calls the kind's hook and writes one Activity row with the actor (None
for the system), the state before and after, and the note. `apply_bulk` applies an action to the
groups where it is legal and reports the rest with the reason.

Transitions (from → to):

    acknowledge  open → acknowledged
    snooze       open | acknowledged → snoozed (until a time, or until N more occurrences)
    unsnooze     snoozed → open
    resolve      open | acknowledged | snoozed → resolved   (blocking occurrences become skipped)
    ignore       open | acknowledged | snoozed → ignored    (blocking occurrences become skipped)
    reopen       resolved | ignored → open
    assign       open | acknowledged | snoozed (state unchanged)
    retry        open | acknowledged | snoozed, with blocking occurrences (state unchanged; the
                 engine clears what gets through and `clear_occurrences` resolves the group)
    comment      any state (state unchanged)

The system's own transitions (auto-resolve, regression, count snooze ending) live in
`recording.py`, which the engine calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import models, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from exceptions_inbox.kinds import KINDS, Prerequisite
from exceptions_inbox.models import Activity, AssignmentNotice, ExceptionGroup, Occurrence
from outbound import record as outbound

if TYPE_CHECKING:
    from django.contrib.auth.models import User

State = ExceptionGroup.State


class Action(models.TextChoices):
    ASSIGN = "assign", "Assign"
    ACKNOWLEDGE = "acknowledge", "Acknowledge"
    SNOOZE = "snooze", "Snooze"
    UNSNOOZE = "unsnooze", "Wake"
    RESOLVE = "resolve", "Resolve"
    IGNORE = "ignore", "Ignore"
    REOPEN = "reopen", "Reopen"
    RETRY = "retry", "Retry"
    COMMENT = "comment", "Comment"


UNCLOSED = frozenset({State.OPEN, State.ACKNOWLEDGED, State.SNOOZED})
LEGAL_FROM: dict[str, frozenset[str]] = {
    Action.ASSIGN: UNCLOSED,
    Action.ACKNOWLEDGE: frozenset({State.OPEN}),
    Action.SNOOZE: frozenset({State.OPEN, State.ACKNOWLEDGED}),
    Action.UNSNOOZE: frozenset({State.SNOOZED}),
    Action.RESOLVE: UNCLOSED,
    Action.IGNORE: UNCLOSED,
    Action.REOPEN: frozenset({State.RESOLVED, State.IGNORED}),
    Action.RETRY: UNCLOSED,
    Action.COMMENT: frozenset(State.values),
}


class IllegalAction(Exception):
    """The action does not apply to the group as it stands; the message says why."""


def why_not(group: ExceptionGroup, action: str, **params: Any) -> str | None:
    """None when `action` is legal on the group now, else the reason in plain words."""
    if action not in LEGAL_FROM:
        return f"there is no action {action!r}"
    if group.state not in LEGAL_FROM[action]:
        return f"it is {group.get_state_display().lower()}"
    if action == Action.ASSIGN:
        assignee = params.get("assignee")
        if (assignee.pk if assignee else None) == group.assignee_id:
            return (
                f"it is already assigned to {assignee.get_username()}"
                if assignee
                else "it is not assigned"
            )
        if (
            assignee is not None
            and not assignee.memberships.filter(workspace_id=group.workspace_id).exists()
        ):
            return f"{assignee.get_username()} is not in its workspace"
    if reason := _why_not_for_any(action, **params):
        return reason
    if action == Action.RETRY:
        if group.kind_info.retry is None:
            return "Syncdesk cannot retry this kind of exception"
        if group.open_count <= 0:
            return "no events are blocked"
        if first := prerequisite_of(group):
            return f"a fix must come first ({first.fix}); a retry would fail the same way"
    return None


def prerequisite_of(group: ExceptionGroup) -> Prerequisite | None:
    """The fix a retry of the group waits on (the kind's `prerequisite` hook), if any."""
    hook = group.kind_info.prerequisite
    return hook(group) if hook is not None and not group.is_closed else None


def apply_action(
    group: ExceptionGroup,
    action: str,
    actor: User | None,
    *,
    note: str = "",
    assignee: User | None = None,
    until: datetime | None = None,
    more: int | None = None,
) -> Activity:
    """Apply one action to one group (raises IllegalAction). Returns the history row written.

    `group` is updated in place. Permission is the caller's business (the views check the owning
    team); this function enforces only what the group's state allows.
    """
    params: dict[str, Any] = {"assignee": assignee, "until": until, "more": more, "note": note}
    with transaction.atomic():
        locked = ExceptionGroup.objects.select_for_update().get(pk=group.pk)
        reason = why_not(locked, action, **params)
        if reason:
            raise IllegalAction(f"Cannot {Action(action).label.lower()}: {reason}.")
        activity, retry_occurrences = _transition(locked, action, actor, **params)
    _copy_state(locked, group)
    if action == Action.RETRY and retry_occurrences:
        # Outside the lock: the engine may re-run the events now, and clear_occurrences (which
        # locks the group again and may resolve it) runs in its own transaction.
        hook = group.kind_info.retry
        assert hook is not None
        hook(retry_occurrences)
        group.refresh_from_db()
    return activity


# The history row each action writes.
ACTIVITY_KINDS: dict[str, str] = {
    Action.ACKNOWLEDGE: Activity.Kind.ACKNOWLEDGED,
    Action.SNOOZE: Activity.Kind.SNOOZED,
    Action.UNSNOOZE: Activity.Kind.UNSNOOZED,
    Action.RESOLVE: Activity.Kind.RESOLVED,
    Action.IGNORE: Activity.Kind.IGNORED,
    Action.REOPEN: Activity.Kind.REOPENED,
    Action.ASSIGN: Activity.Kind.ASSIGNED,
    Action.RETRY: Activity.Kind.RETRIED,
    Action.COMMENT: Activity.Kind.COMMENTED,
}


def _transition(
    group: ExceptionGroup,
    action: str,
    actor: User | None,
    *,
    note: str,
    assignee: User | None,
    until: datetime | None,
    more: int | None,
) -> tuple[Activity, list[Occurrence]]:
    """Change the locked group as `action` says, call the kind's hook and write the history row.
    Returns the row and, for a retry, the blocked occurrences to send back."""
    if action not in ACTIVITY_KINDS:  # pragma: no cover - why_not() rejects unknown actions
        raise IllegalAction(action)
    kind = group.kind_info
    before = _snapshot(group)
    retry_occurrences: list[Occurrence] = []
    extra_after: dict[str, Any] = {}
    if action in (Action.RESOLVE, Action.IGNORE):
        changed, skipped = _close(group, action, actor, note)
        extra_after["skipped"] = skipped
    else:
        changed = _set_fields(group, _new_values(group, action, assignee, until, more))
        if (
            action == Action.ASSIGN
            and assignee is not None
            and assignee != actor
            and assignee.email
        ):
            AssignmentNotice.objects.create(group=group, assignee=assignee, assigned_by=actor)
        if action == Action.RETRY:
            retry_occurrences = list(group.occurrences.filter(state=Occurrence.State.OPEN))
            note = note or f"{len(retry_occurrences)} blocked event(s) sent back"
        if changed:
            group.save(update_fields=sorted(set(changed)))
    if action == Action.ACKNOWLEDGE and kind.on_acknowledge is not None:
        kind.on_acknowledge(group, actor)
    activity = Activity.objects.create(
        group=group,
        kind=ACTIVITY_KINDS[action],
        actor=actor,
        note=note,
        before=before if changed else {},
        after={**_snapshot(group), **extra_after} if changed else {},
    )
    if changed:  # assigned, resolved: told to outbound webhooks in this transaction
        outbound.group_event(activity.kind, group, actor=actor, note=note)
    return activity, retry_occurrences


def _new_values(
    group: ExceptionGroup,
    action: str,
    assignee: User | None,
    until: datetime | None,
    more: int | None,
) -> dict[str, Any]:
    """The group's fields an action other than resolve or ignore sets (none for retry, comment)."""
    if action == Action.ACKNOWLEDGE:
        return {"state": State.ACKNOWLEDGED}
    if action == Action.SNOOZE:
        return {
            "state": State.SNOOZED,
            "snoozed_until": until,
            "snooze_until_count": group.occurrence_count + more if more else None,
        }
    if action == Action.UNSNOOZE:
        return {"state": State.OPEN, "snoozed_until": None, "snooze_until_count": None}
    if action == Action.REOPEN:
        return {"state": State.OPEN, "closed_at": None}
    if action == Action.ASSIGN:
        return {"assignee": assignee}
    return {}


def _set_fields(group: ExceptionGroup, values: dict[str, Any]) -> list[str]:
    """Set the fields on the group in memory; returns their names (saved by the caller)."""
    for name, value in values.items():
        setattr(group, name, value)
    return list(values)


def _close(
    group: ExceptionGroup, action: str, actor: User | None, note: str
) -> tuple[list[str], int]:
    """Resolve or ignore: the blocking occurrences become skipped, the group is saved closed and
    the kind's hook is told. Returns the fields saved and how many occurrences were skipped."""
    blocking = list(group.occurrences.filter(state=Occurrence.State.OPEN))
    Occurrence.objects.filter(pk__in=[o.pk for o in blocking]).update(
        state=Occurrence.State.SKIPPED
    )
    resolving = action == Action.RESOLVE
    changed = _set_fields(
        group,
        {
            "state": State.RESOLVED if resolving else State.IGNORED,
            "closed_at": timezone.now(),
            "open_count": 0,
            "is_regression": False,
            "snoozed_until": None,
            "snooze_until_count": None,
        },
    )
    group.save(update_fields=changed)
    kind = group.kind_info
    hook = kind.on_resolve if resolving else kind.on_ignore
    if hook is not None:
        # The engine makes these events skipped, with the person and their note as reason.
        hook(group, blocking, actor, note)
    return changed, len(blocking)


def _snapshot(group: ExceptionGroup) -> dict[str, Any]:
    assignee = group.assignee
    data: dict[str, Any] = {
        "state": group.state,
        "assignee": assignee.get_username() if assignee else None,
    }
    if group.snoozed_until:
        data["snoozed_until"] = group.snoozed_until.isoformat()
    if group.snooze_until_count:
        data["snooze_until_count"] = group.snooze_until_count
    return data


def _copy_state(source: ExceptionGroup, target: ExceptionGroup) -> None:
    for name in (
        "state",
        "assignee_id",
        "snoozed_until",
        "snooze_until_count",
        "closed_at",
        "open_count",
        "occurrence_count",
        "is_regression",
    ):
        setattr(target, name, getattr(source, name))
    if "assignee" in target._state.fields_cache:
        target._state.fields_cache["assignee"] = source.assignee


@dataclass
class BulkResult:
    """What a bulk action did: the groups it changed and, for the rest, why not.

    `skipped` names each group left alone (a ticked selection); `counted` gives the number left
    alone per reason when the groups were counted rather than read (every match of a filter).
    `remaining` is how many legal matches were beyond this request's limit."""

    applied: list[ExceptionGroup] = field(default_factory=list)
    skipped: list[tuple[ExceptionGroup, str]] = field(default_factory=list)
    counted: dict[str, int] = field(default_factory=dict)
    remaining: int = 0

    def reasons(self) -> dict[str, int]:
        """How many groups were left unchanged, per reason."""
        reasons = dict(self.counted)
        for _group, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        return {reason: n for reason, n in reasons.items() if n}

    def summary(self, action: str) -> str:
        label = Action(action).label
        text = f"{label}: {len(self.applied)} group(s)."
        reasons = self.reasons()
        if reasons:
            parts = ", ".join(f"{n} because {reason}" for reason, n in sorted(reasons.items()))
            text += f" Left {sum(reasons.values())} unchanged: {parts}."
        if self.remaining:
            text += f" {self.remaining} more match: apply it again to continue."
        return text


def apply_bulk(
    groups: Iterable[ExceptionGroup], action: str, actor: User | None, **params: Any
) -> BulkResult:
    """Apply `action` to each group where it is legal; report the others with the reason."""
    result = BulkResult()
    for group in groups:
        reason = why_not(group, action, **params)
        if reason is None:
            try:
                apply_action(group, action, actor, **params)
            except IllegalAction as exc:  # changed under us since it was read
                result.skipped.append((group, str(exc)))
                continue
            result.applied.append(group)
        else:
            result.skipped.append((group, reason))
    return result


# Every match of a filter is applied in one request up to this many groups; the rest are reported
# ("apply it again"): each group is one locked transition, one history row and maybe a hook call.
MATCH_LIMIT = 1000


def legal_subset(
    groups: QuerySet[ExceptionGroup], action: str, **params: Any
) -> QuerySet[ExceptionGroup]:
    """The groups of `groups` where `action` is legal, as a query (what `why_not` checks one
    group at a time, short of the workspace membership of an assignee)."""
    legal = groups.filter(state__in=LEGAL_FROM[action])
    if action == Action.ASSIGN:
        assignee = params.get("assignee")
        legal = (
            legal.exclude(assignee=assignee)
            if assignee is not None
            else legal.filter(assignee__isnull=False)
        )
    if action == Action.RETRY:
        retryable = [slug for slug, kind in KINDS.items() if kind.retry is not None]
        legal = legal.filter(kind__in=retryable, open_count__gt=0)
    return legal


def apply_to_matching(
    groups: QuerySet[ExceptionGroup],
    action: str,
    actor: User | None,
    *,
    may_change: Q,
    limit: int = MATCH_LIMIT,
    **params: Any,
) -> BulkResult:
    """Apply `action` to every group of `groups` (a filter's matches, on any page) that the
    person may change (`may_change`) and where it is legal; count the rest by reason.

    At most `limit` groups change in one call, newest activity first; `remaining` says how many
    more were legal. Those changed leave the legal subset (their state or assignee changed), so
    applying it again continues where this stopped."""
    result = BulkResult()
    if why_not_anywhere := _why_not_for_any(action, **params):
        result.counted[why_not_anywhere] = groups.count()
        return result
    allowed = groups.filter(may_change)
    result.counted["only its team or an admin may change it"] = groups.exclude(may_change).count()
    legal = legal_subset(allowed, action, **params)
    for state, n in (
        allowed.exclude(state__in=LEGAL_FROM[action])
        .order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
    ):
        result.counted[f"it is {State(state).label.lower()}"] = n
    in_legal_state = allowed.filter(state__in=LEGAL_FROM[action])
    if action == Action.ASSIGN:
        assignee = params.get("assignee")
        reason = (
            f"it is already assigned to {assignee.get_username()}"
            if assignee
            else "it is not assigned"
        )
        result.counted[reason] = in_legal_state.exclude(pk__in=legal.values("pk")).count()
    if action == Action.RETRY:
        result.counted["there is nothing Syncdesk can retry"] = in_legal_state.exclude(
            pk__in=legal.values("pk")
        ).count()
    batch = list(
        legal.select_related("workspace", "team", "assignee").order_by("-last_seen", "-id")[
            : limit + 1
        ]
    )
    if len(batch) > limit:
        batch = batch[:limit]
        result.remaining = legal.count() - limit
    done = apply_bulk(batch, action, actor, **params)
    result.applied = done.applied
    result.skipped = done.skipped
    return result


def _why_not_for_any(action: str, **params: Any) -> str | None:
    """A reason that holds whatever the group (a snooze already over, an empty comment)."""
    if action == Action.SNOOZE:
        if not params.get("until") and not params.get("more"):
            return "a snooze needs a time or a number of occurrences"
        until = params.get("until")
        if until is not None and until <= timezone.now():
            return "the snooze would already be over"
    if action == Action.COMMENT and not str(params.get("note", "")).strip():
        return "a comment needs some text"
    return None


def wake_due_snoozes(now: datetime | None = None, limit: int = 500) -> Sequence[int]:
    """Groups whose snooze time is up go back to open, as done by the system. Returns their ids."""
    now = now or timezone.now()
    due = list(
        ExceptionGroup.objects.filter(state=State.SNOOZED, snoozed_until__lte=now).order_by(
            "snoozed_until"
        )[:limit]
    )
    woken = []
    for group in due:
        try:
            apply_action(group, Action.UNSNOOZE, None, note="snooze time is up")
        except IllegalAction:  # woken or closed meanwhile
            continue
        woken.append(group.pk)
    return woken
