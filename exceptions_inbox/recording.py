"""How the engine opens and clears exceptions: the only write API it uses.

`record_occurrence` files a blocked event under its group (created, reopened as a regression, or
counted toward a snooze). A regression is a new occurrence after the resolve: the same event
failing again on an attempt that started before the resolve (a retry already running when the
person resolved) is what the person already decided on, so it is skipped, not a regression.
`clear_occurrences` marks an event's occurrences as got through, and a group with nothing left
blocking resolves itself, recorded as done by the system.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Team, Workspace
from exceptions_inbox.kinds import get_kind
from exceptions_inbox.models import (
    Activity,
    ExceptionGroup,
    KnownFlow,
    Occurrence,
    RoutingRule,
    fingerprint,
)
from outbound import record as outbound


def route_team(
    workspace: Workspace, kind: str, flow_key: str, team_slug: str | None = None
) -> Team | None:
    """The owning team: a rule for this kind and flow, else for this kind, else the caller's
    suggestion (e.g. reconciliation picks finance or marketing by field), else the kind's default."""
    rules = {
        r.flow_key: r.team
        for r in RoutingRule.objects.filter(
            workspace=workspace, kind=kind, flow_key__in=[flow_key, ""]
        ).select_related("team")
    }
    if flow_key in rules:
        return rules[flow_key]
    if "" in rules:
        return rules[""]
    slug = team_slug or get_kind(kind).default_team
    return workspace.teams.filter(slug=slug).first()


def record_occurrence(
    *,
    workspace: Workspace,
    kind: str,
    event_key: str,
    stage: str,
    message: str,
    title: str = "",
    flow_key: str = "",
    flow_label: str = "",
    subject_key: str = "",
    subject_label: str = "",
    detail: dict[str, Any] | None = None,
    source_event_id: str = "",
    order_number: str = "",
    sku: str = "",
    email: str = "",
    team_slug: str | None = None,
    attempt_started_at: datetime | None = None,
) -> Occurrence:
    """File one blocked event. Idempotent per (group, event): recording it again counts a sighting.

    `attempt_started_at` is when the engine began the attempt that failed (None: unknown, taken
    as before any resolve). The caller should look at ``occurrence.state``: when it is skipped the
    event is to be skipped straight away (the person who ignored or resolved the group decided).
    """
    now = timezone.now()
    fp = fingerprint(kind, flow_key, subject_key)
    per_flow = get_kind(kind).per_flow
    with transaction.atomic():
        group, opened = _get_or_create_group(
            workspace,
            kind,
            fp,
            now,
            title=title or _title(kind, flow_label, subject_key, subject_label),
            flow_key=flow_key,
            flow_label=flow_label,
            subject_key=subject_key,
            subject_label=subject_label,
            # A group per flow and cause stands for many orders and people: theirs are on its
            # occurrences, not on the group.
            order_number="" if per_flow else order_number,
            sku="" if per_flow else sku,
            email="" if per_flow else email,
            team_slug=team_slug,
        )
        # In an ignored group the event is skipped straight away: the person who ignored the
        # group decided so, and the group stays ignored (nothing blocks on it). So is an event
        # of a resolved group failing again on an attempt begun before the resolve.
        skip = group.state == ExceptionGroup.State.IGNORED or _decided_before(
            group, event_key, attempt_started_at
        )
        occurrence, created, newly_blocking = _file_occurrence(
            group,
            event_key,
            now,
            skip=skip,
            workspace=workspace,
            stage=stage,
            message=message,
            detail=detail or {},
            source_event_id=source_event_id,
            order_number=order_number,
            sku=sku,
            email=email,
        )
        updates: dict[str, Any] = {"last_seen": now}
        if created or newly_blocking:
            updates["occurrence_count"] = F("occurrence_count") + 1
        if newly_blocking:
            updates["open_count"] = F("open_count") + 1
        ExceptionGroup.objects.filter(pk=group.pk).update(**updates)
        group.refresh_from_db()
        if opened:
            outbound.group_event(Activity.Kind.CREATED, group)
        if newly_blocking:
            _wake(group, now)
    occurrence.group = group
    return occurrence


def skipped_reason(group_state: str, kind: str) -> str:
    """Why the engine skips an event whose occurrence arrived skipped (`record_occurrence`)."""
    if group_state == ExceptionGroup.State.RESOLVED:
        return f"Resolved in the inbox while its retry was already running ({kind})."
    return f"Ignored in the inbox ({kind})."


def _title(kind: str, flow_label: str, subject_key: str, subject_label: str) -> str:
    info = get_kind(kind)
    if info.per_flow:
        return f"{info.title}: {flow_label or 'no flow'}"
    return f"{info.title}: {subject_label or subject_key or flow_label}"


def _decided_before(
    group: ExceptionGroup, event_key: str, attempt_started_at: datetime | None
) -> bool:
    """Whether the event's occurrence was skipped by the group's resolve and this attempt began
    before that resolve (a retry in flight): not a new occurrence, so not a regression."""
    if group.state != ExceptionGroup.State.RESOLVED or group.closed_at is None:
        return False
    if attempt_started_at is not None and attempt_started_at > group.closed_at:
        return False
    return Occurrence.objects.filter(
        group=group, event_key=event_key, state=Occurrence.State.SKIPPED
    ).exists()


def _file_occurrence(
    group: ExceptionGroup,
    event_key: str,
    now: Any,
    *,
    skip: bool,
    stage: str,
    message: str,
    detail: dict[str, Any],
    **keys: Any,
) -> tuple[Occurrence, bool, bool]:
    """The event's occurrence in the group, created or seen again (its stage, message and detail
    refreshed). Returns it, whether it was created, and whether it newly blocks: the group is not
    ignored and the occurrence is new or was not blocking."""
    arriving_state = Occurrence.State.SKIPPED if skip else Occurrence.State.OPEN
    occurrence, created = Occurrence.objects.get_or_create(
        group=group,
        event_key=event_key,
        defaults={
            **keys,
            "stage": stage,
            "message": message,
            "detail": detail,
            "state": arriving_state,
            "first_seen": now,
            "last_seen": now,
        },
    )
    if created:
        return occurrence, True, not skip
    was_open = occurrence.state == Occurrence.State.OPEN
    Occurrence.objects.filter(pk=occurrence.pk).update(
        stage=stage,
        message=message,
        detail=detail,
        # Its business keys too: in a group per flow one event may be blocked by a second cause
        # (another unknown SKU), and the occurrence names the one it stops at now.
        **{name: value for name, value in keys.items() if value},
        last_seen=now,
        state=Occurrence.State.OPEN if was_open else arriving_state,
        times_seen=F("times_seen") + 1,
    )
    occurrence.refresh_from_db()
    return occurrence, False, not was_open and not skip


def _get_or_create_group(
    workspace: Workspace, kind: str, fp: str, now: Any, *, team_slug: str | None, **fields: Any
) -> tuple[ExceptionGroup, bool]:
    """The locked group, and whether it was opened now."""
    group = (
        ExceptionGroup.objects.select_for_update()
        .filter(workspace=workspace, fingerprint=fp)
        .first()
    )
    if group is not None:
        return group, False
    try:
        with transaction.atomic():
            group = ExceptionGroup.objects.create(
                workspace=workspace,
                kind=kind,
                fingerprint=fp,
                first_seen=now,
                last_seen=now,
                team=route_team(workspace, kind, fields["flow_key"], team_slug),
                **fields,
            )
    except IntegrityError:  # another worker created it first
        group = ExceptionGroup.objects.select_for_update().get(workspace=workspace, fingerprint=fp)
        return group, False
    Activity.objects.create(group=group, kind=Activity.Kind.CREATED, after={"state": group.state})
    if group.flow_key:
        KnownFlow.objects.update_or_create(
            workspace=workspace,
            flow_key=group.flow_key,
            defaults={"flow_label": group.flow_label},
        )
    return group, True


def _wake(group: ExceptionGroup, now: Any) -> None:
    """A new blocking occurrence: reopen a resolved group as a regression; end a count snooze."""
    State = ExceptionGroup.State
    if group.state == State.RESOLVED:
        _set_state(group, State.OPEN, Activity.Kind.REGRESSED, is_regression=True, closed_at=None)
    elif (
        group.state == State.SNOOZED
        and group.snooze_until_count is not None
        and group.occurrence_count >= group.snooze_until_count
    ):
        _set_state(
            group,
            State.OPEN,
            Activity.Kind.UNSNOOZED,
            snoozed_until=None,
            snooze_until_count=None,
            note=f"{group.occurrence_count} occurrences reached",
        )


def _set_state(
    group: ExceptionGroup, state: str, activity: str, *, note: str = "", **fields: Any
) -> None:
    before = {"state": group.state}
    ExceptionGroup.objects.filter(pk=group.pk).update(state=state, **fields)
    group.refresh_from_db()
    Activity.objects.create(
        group=group, kind=activity, note=note, before=before, after={"state": state}
    )
    outbound.group_event(activity, group, note=note)  # regressed, resolved by the system


def clear_occurrences(
    workspace: Workspace, event_keys: Iterable[str], *, stage: str | None = None
) -> int:
    """The events got past where they were blocked: clear their open occurrences, and resolve (as
    the system) each group left with nothing blocking. Returns how many occurrences cleared."""
    keys = list(event_keys)
    if not keys:
        return 0
    cleared = 0
    with transaction.atomic():
        qs = Occurrence.objects.filter(
            workspace=workspace, event_key__in=keys, state=Occurrence.State.OPEN
        )
        if stage is not None:
            qs = qs.filter(stage=stage)
        by_group: dict[int, int] = {}
        for group_id in qs.values_list("group_id", flat=True):
            by_group[group_id] = by_group.get(group_id, 0) + 1
        if not by_group:
            return 0
        cleared = qs.update(state=Occurrence.State.CLEARED, last_seen=timezone.now())
        for group in ExceptionGroup.objects.select_for_update().filter(pk__in=by_group):
            ExceptionGroup.objects.filter(pk=group.pk).update(
                open_count=F("open_count") - by_group[group.pk]
            )
            group.refresh_from_db()
            if group.open_count <= 0 and not group.is_closed:
                _set_state(
                    group,
                    ExceptionGroup.State.RESOLVED,
                    Activity.Kind.AUTO_RESOLVED,
                    closed_at=timezone.now(),
                    open_count=0,
                )
    return cleared
