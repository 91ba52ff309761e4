from __future__ import annotations

from exceptions_inbox.kinds import KINDS, get_kind
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence, RoutingRule
from exceptions_inbox.recording import clear_occurrences, record_occurrence


def gap(workspace, event_key, sku="AB-12/RED", flow_key="flow:1"):
    return record_occurrence(
        workspace=workspace,
        kind="sku_mapping_gap",
        event_key=event_key,
        stage="stage",
        message=f"SKU {sku} is not in the catalogue",
        flow_key=flow_key,
        flow_label="Demo WMS",
        subject_key=f"sku:{sku}",
        subject_label=sku,
        sku=sku,
    )


def test_occurrences_of_one_cause_share_one_group_routed_to_its_default_team(world):
    for n in range(40):
        gap(world.workspace, f"event:{n}")
    group = ExceptionGroup.objects.get()
    assert (group.occurrence_count, group.open_count) == (40, 40)
    assert group.team.slug == "ops"
    assert group.state == "open"
    assert list(group.activities.values_list("kind", flat=True)) == ["created"]


def test_recording_the_same_event_twice_counts_a_sighting_not_an_occurrence(world):
    gap(world.workspace, "event:1")
    occurrence = gap(world.workspace, "event:1")
    assert occurrence.times_seen == 2
    assert Occurrence.objects.count() == 1
    assert ExceptionGroup.objects.get().occurrence_count == 1


def test_another_flow_or_subject_is_another_group(world):
    gap(world.workspace, "event:1")
    gap(world.workspace, "event:2", sku="ZZ-9")
    gap(world.workspace, "event:3", flow_key="flow:2")
    assert ExceptionGroup.objects.count() == 3


def test_a_routing_rule_for_the_flow_beats_the_rule_for_the_kind_and_the_default(world):
    teams = {t.slug: t for t in world.workspace.teams.all()}
    RoutingRule.objects.create(
        workspace=world.workspace, kind="sku_mapping_gap", team=teams["marketing"]
    )
    RoutingRule.objects.create(
        workspace=world.workspace, kind="sku_mapping_gap", flow_key="flow:2", team=teams["finance"]
    )
    assert gap(world.workspace, "e1").group.team.slug == "marketing"
    assert gap(world.workspace, "e2", flow_key="flow:2").group.team.slug == "finance"


def test_a_group_whose_events_all_get_through_resolves_itself_as_the_system(world):
    gap(world.workspace, "event:1")
    gap(world.workspace, "event:2")
    assert clear_occurrences(world.workspace, ["event:1"]) == 1
    assert ExceptionGroup.objects.get().state == "open"
    clear_occurrences(world.workspace, ["event:2"])
    group = ExceptionGroup.objects.get()
    assert (group.state, group.open_count) == ("resolved", 0)
    last = group.activities.last()
    assert last.kind == Activity.Kind.AUTO_RESOLVED and last.actor is None


def test_a_new_occurrence_after_a_resolve_reopens_the_group_as_a_regression(world):
    gap(world.workspace, "event:1")
    clear_occurrences(world.workspace, ["event:1"])
    gap(world.workspace, "event:2")
    group = ExceptionGroup.objects.get()
    assert group.state == "open" and group.is_regression
    assert group.activities.last().kind == Activity.Kind.REGRESSED


def test_a_snooze_until_n_occurrences_ends_when_they_arrive(world):
    gap(world.workspace, "event:1")
    ExceptionGroup.objects.update(state="snoozed", snooze_until_count=3)
    gap(world.workspace, "event:2")
    assert ExceptionGroup.objects.get().state == "snoozed"
    gap(world.workspace, "event:3")
    assert ExceptionGroup.objects.get().state == "open"


def test_every_kind_has_a_title_a_runbook_and_a_default_team_that_exists(world):
    teams = set(world.workspace.teams.values_list("slug", flat=True))
    for kind in KINDS.values():
        assert kind.title and kind.description and kind.runbook
        assert kind.default_team in teams


def test_an_unknown_kind_still_reads(world):
    assert get_kind("retired_kind").title == "Retired kind"
