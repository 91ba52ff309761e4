"""The state machine: every action from every state, legal or not, and what each writes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from exceptions_inbox.actions import (
    LEGAL_FROM,
    Action,
    IllegalAction,
    apply_action,
    apply_bulk,
    wake_due_snoozes,
)
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence
from exceptions_inbox.recording import clear_occurrences
from tests.exceptions_inbox.factories import make_group

S = ExceptionGroup.State

# What each legal action leaves the group in.
AFTER = {
    Action.ACKNOWLEDGE: S.ACKNOWLEDGED,
    Action.SNOOZE: S.SNOOZED,
    Action.UNSNOOZE: S.OPEN,
    Action.RESOLVE: S.RESOLVED,
    Action.IGNORE: S.IGNORED,
    Action.REOPEN: S.OPEN,
}

EXPECTED_LEGAL = {
    (Action.ACKNOWLEDGE, S.OPEN),
    (Action.SNOOZE, S.OPEN),
    (Action.SNOOZE, S.ACKNOWLEDGED),
    (Action.UNSNOOZE, S.SNOOZED),
    *((Action.RESOLVE, s) for s in (S.OPEN, S.ACKNOWLEDGED, S.SNOOZED)),
    *((Action.IGNORE, s) for s in (S.OPEN, S.ACKNOWLEDGED, S.SNOOZED)),
    (Action.REOPEN, S.RESOLVED),
    (Action.REOPEN, S.IGNORED),
    *((Action.ASSIGN, s) for s in (S.OPEN, S.ACKNOWLEDGED, S.SNOOZED)),
    *((Action.RETRY, s) for s in (S.OPEN, S.ACKNOWLEDGED, S.SNOOZED)),
    *((Action.COMMENT, s) for s in S.values),
}


def group_in(workspace, state):
    group = make_group(workspace, events=2)
    fields = {"state": state}
    if state == S.SNOOZED:
        fields["snoozed_until"] = timezone.now() + timedelta(hours=1)
    if state in (S.RESOLVED, S.IGNORED):
        fields["closed_at"] = timezone.now()
    ExceptionGroup.objects.filter(pk=group.pk).update(**fields)
    group.refresh_from_db()
    return group


def params_for(action, world):
    return {
        Action.ASSIGN: {"assignee": world.teammate},
        Action.SNOOZE: {"until": timezone.now() + timedelta(hours=1)},
        Action.COMMENT: {"note": "looking"},
    }.get(action, {})


def test_the_table_of_legal_transitions_is_the_one_documented():
    legal = {(a, s) for a, states in LEGAL_FROM.items() for s in states}
    assert legal == EXPECTED_LEGAL


@pytest.mark.parametrize("state", S.values)
@pytest.mark.parametrize("action", Action.values)
def test_it_applies_every_legal_transition_and_refuses_every_illegal_one(
    world, hooks, action, state
):
    hooks.register("sku_mapping_gap", retry=hooks.recorder("retry"))
    group = group_in(world.workspace, state)
    history = group.activities.count()
    if (action, state) in EXPECTED_LEGAL:
        activity = apply_action(group, action, world.teammate, **params_for(action, world))
        group.refresh_from_db()
        assert group.state == AFTER.get(action, state)
        assert activity.actor == world.teammate
        assert group.activities.count() == history + 1
        if action in AFTER:
            assert activity.before["state"] == state
            assert activity.after["state"] == AFTER[action]
    else:
        with pytest.raises(IllegalAction):
            apply_action(group, action, world.teammate, **params_for(action, world))
        group.refresh_from_db()
        assert group.state == state
        assert group.activities.count() == history


def test_acknowledging_calls_the_kinds_hook_with_the_person(world, hooks):
    hooks.register("lag", on_acknowledge=hooks.recorder("on_acknowledge"))
    group = make_group(world.workspace, kind="lag")
    apply_action(group, Action.ACKNOWLEDGE, world.teammate)
    assert hooks.calls == [("on_acknowledge", (group, world.teammate))]


def test_resolving_by_hand_skips_the_blocked_events_and_tells_the_engine_who_and_why(world, hooks):
    hooks.register("sku_mapping_gap", on_resolve=hooks.recorder("on_resolve"))
    group = make_group(world.workspace, events=3)
    clear_occurrences(world.workspace, [group.occurrences.first().event_key])
    activity = apply_action(group, Action.RESOLVE, world.teammate, note="discontinued line")
    group.refresh_from_db()
    assert (group.state, group.open_count) == (S.RESOLVED, 0)
    assert group.closed_at is not None
    states = sorted(group.occurrences.values_list("state", flat=True))
    assert states == ["cleared", "skipped", "skipped"]
    [(name, (hook_group, occurrences, actor, note))] = hooks.calls
    assert name == "on_resolve" and hook_group.pk == group.pk
    assert sorted(o.pk for o in occurrences) == sorted(
        group.occurrences.filter(state="skipped").values_list("pk", flat=True)
    )
    assert (actor, note) == (world.teammate, "discontinued line")
    assert (activity.kind, activity.note, activity.after["skipped"]) == (
        "resolved",
        "discontinued line",
        2,
    )


def test_ignoring_calls_on_ignore_and_later_events_are_skipped_straight_away(world, hooks):
    hooks.register("sku_mapping_gap", on_ignore=hooks.recorder("on_ignore"))
    group = make_group(world.workspace, events=2)
    apply_action(group, Action.IGNORE, world.admin, note="test SKU")
    assert [name for name, _ in hooks.calls] == ["on_ignore"]
    occurrence = make_group(world.workspace).occurrences.order_by("-pk").first()
    group.refresh_from_db()
    assert occurrence.state == Occurrence.State.SKIPPED
    assert (group.state, group.open_count, group.occurrence_count) == (S.IGNORED, 0, 3)


def test_retry_hands_the_blocked_events_to_the_engine_and_a_clean_run_resolves_the_group(
    world, hooks
):
    def retry(occurrences):
        hooks.calls.append(("retry", tuple(o.event_key for o in occurrences)))
        # The engine re-runs them from the stage that failed; today's catalogue has the SKU.
        clear_occurrences(world.workspace, [o.event_key for o in occurrences])

    hooks.register("sku_mapping_gap", retry=retry)
    group = make_group(world.workspace, events=3)
    apply_action(group, Action.RETRY, world.teammate)
    assert len(hooks.calls[0][1]) == 3
    assert group.state == S.RESOLVED
    kinds = list(group.activities.values_list("kind", "actor"))
    assert kinds[-2:] == [("retried", world.teammate.pk), ("auto_resolved", None)]


def test_retry_of_events_that_fail_again_leaves_the_group_open(world, hooks):
    hooks.register("sku_mapping_gap", retry=hooks.recorder("retry"))
    group = make_group(world.workspace, events=2)
    apply_action(group, Action.RETRY, world.teammate)
    group.refresh_from_db()
    assert (group.state, group.open_count) == (S.OPEN, 2)


def test_retry_needs_a_hook_and_something_blocked(world, hooks):
    group = make_group(world.workspace)
    with pytest.raises(IllegalAction, match="cannot retry"):
        apply_action(group, Action.RETRY, world.teammate)
    hooks.register("sku_mapping_gap", retry=hooks.recorder("retry"))
    clear_occurrences(world.workspace, group.occurrences.values_list("event_key", flat=True))
    ExceptionGroup.objects.filter(pk=group.pk).update(state=S.OPEN)
    group.refresh_from_db()
    with pytest.raises(IllegalAction, match="no events are blocked"):
        apply_action(group, Action.RETRY, world.teammate)


def test_a_resolved_group_regresses_on_a_new_occurrence(world):
    group = make_group(world.workspace)
    apply_action(group, Action.RESOLVE, world.teammate)
    make_group(world.workspace)
    group.refresh_from_db()
    assert (group.state, group.is_regression, group.open_count) == (S.OPEN, True, 1)
    assert group.activities.last().kind == Activity.Kind.REGRESSED


def test_a_snooze_until_n_more_occurrences_counts_from_now(world):
    group = make_group(world.workspace, events=5)
    apply_action(group, Action.SNOOZE, world.teammate, more=2)
    assert group.snooze_until_count == 7
    make_group(world.workspace)
    group.refresh_from_db()
    assert group.state == S.SNOOZED
    make_group(world.workspace)
    group.refresh_from_db()
    assert group.state == S.OPEN and group.snooze_until_count is None


def test_a_snooze_by_time_is_woken_by_the_sweeper_as_the_system(world, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    group = make_group(world.workspace)
    apply_action(group, Action.SNOOZE, world.teammate, until=timezone.now() + timedelta(hours=1))
    assert wake_due_snoozes() == []
    time_machine.shift(timedelta(hours=1, seconds=1))
    assert wake_due_snoozes() == [group.pk]
    group.refresh_from_db()
    assert group.state == S.OPEN and group.snoozed_until is None
    last = group.activities.last()
    assert (last.kind, last.actor) == ("unsnoozed", None)


def test_a_snooze_must_end_in_the_future(world):
    group = make_group(world.workspace)
    with pytest.raises(IllegalAction, match="already be over"):
        apply_action(group, Action.SNOOZE, world.teammate, until=timezone.now())
    with pytest.raises(IllegalAction, match="needs a time"):
        apply_action(group, Action.SNOOZE, world.teammate)


def test_assigning_records_who_before_and_after_and_queues_one_notice(world):
    group = make_group(world.workspace)
    activity = apply_action(group, Action.ASSIGN, world.admin, assignee=world.teammate)
    assert (activity.before["assignee"], activity.after["assignee"]) == (None, "teammate")
    assert group.assignee == world.teammate
    with pytest.raises(IllegalAction, match="already assigned to teammate"):
        apply_action(group, Action.ASSIGN, world.admin, assignee=world.teammate)
    activity = apply_action(group, Action.ASSIGN, world.admin, assignee=None)
    assert activity.after["assignee"] is None


def test_only_workspace_members_can_be_assigned(world):
    group = make_group(world.workspace)
    with pytest.raises(IllegalAction, match="not in its workspace"):
        apply_action(group, Action.ASSIGN, world.admin, assignee=world.outsider)


def test_a_bulk_action_applies_where_legal_and_reports_the_rest(world):
    open_group = make_group(world.workspace, sku="A")
    acknowledged = make_group(world.workspace, sku="B")
    apply_action(acknowledged, Action.ACKNOWLEDGE, world.teammate)
    resolved = make_group(world.workspace, sku="C")
    apply_action(resolved, Action.RESOLVE, world.teammate)
    another_open = make_group(world.workspace, sku="D")

    result = apply_bulk(ExceptionGroup.objects.order_by("pk"), Action.ACKNOWLEDGE, world.teammate)

    assert [g.pk for g in result.applied] == [open_group.pk, another_open.pk]
    assert [(g.pk, reason) for g, reason in result.skipped] == [
        (acknowledged.pk, "it is acknowledged"),
        (resolved.pk, "it is resolved"),
    ]
    assert result.summary(Action.ACKNOWLEDGE) == (
        "Acknowledge: 2 group(s). Left 2 unchanged: 1 because it is acknowledged, "
        "1 because it is resolved."
    )
    states = dict(ExceptionGroup.objects.values_list("pk", "state"))
    assert states == {
        open_group.pk: "acknowledged",
        acknowledged.pk: "acknowledged",
        resolved.pk: "resolved",
        another_open.pk: "acknowledged",
    }


def test_every_match_changes_at_most_the_limit_and_applying_again_continues(world):
    from django.db.models import Q

    from exceptions_inbox.actions import apply_to_matching

    groups = [make_group(world.workspace, sku=f"S-{n}") for n in range(5)]
    everything = Q(pk__isnull=False)
    matching = ExceptionGroup.objects.filter(state__in=[S.OPEN, S.ACKNOWLEDGED])

    first = apply_to_matching(
        matching, Action.ACKNOWLEDGE, world.teammate, may_change=everything, limit=2
    )
    assert (len(first.applied), first.remaining) == (2, 3)
    assert first.summary(Action.ACKNOWLEDGE) == (
        "Acknowledge: 2 group(s). 3 more match: apply it again to continue."
    )
    # newest activity first
    assert [g.pk for g in first.applied] == [groups[4].pk, groups[3].pk]

    second = apply_to_matching(
        matching, Action.ACKNOWLEDGE, world.teammate, may_change=everything, limit=2
    )
    assert (len(second.applied), second.remaining, second.reasons()) == (
        2,
        1,
        {"it is acknowledged": 2},
    )
    third = apply_to_matching(
        matching, Action.ACKNOWLEDGE, world.teammate, may_change=everything, limit=2
    )
    assert (len(third.applied), third.remaining, third.reasons()) == (
        1,
        0,
        {"it is acknowledged": 4},
    )
    assert set(ExceptionGroup.objects.values_list("state", flat=True)) == {S.ACKNOWLEDGED}


def test_every_match_retries_only_what_can_be_retried_and_counts_the_rest(world, hooks):
    from django.db.models import Q

    from exceptions_inbox.actions import apply_to_matching

    hooks.register("sku_mapping_gap", retry=hooks.recorder("retry"))
    gap = make_group(world.workspace, sku="GAP")
    mismatch = make_group(world.workspace, kind="order_total_mismatch", sku="SO-1")
    result = apply_to_matching(
        ExceptionGroup.objects.all(), Action.RETRY, world.admin, may_change=Q(pk__isnull=False)
    )
    assert [g.pk for g in result.applied] == [gap.pk]
    assert result.reasons() == {"there is nothing Syncdesk can retry": 1}
    assert mismatch.activities.filter(kind="retried").count() == 0
    assert [name for name, _args in hooks.calls] == ["retry"]
