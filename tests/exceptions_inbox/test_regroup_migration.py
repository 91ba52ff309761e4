"""Migration 0005: the groups opened one per order (or per event) before are merged into the one
group per flow and cause the engine records into now, so they keep working."""

from __future__ import annotations

import importlib
from datetime import timedelta

from django.apps import apps
from django.utils import timezone

from exceptions_inbox.actions import Action, apply_action
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence, fingerprint
from exceptions_inbox.recording import record_occurrence

migration = importlib.import_module("exceptions_inbox.migrations.0005_one_group_per_flow_and_cause")


def old_group(workspace, kind, flow_key, subject, *, events, state="open", hours_ago=1, **fields):
    """A group as the engine opened it before: one per order or event."""
    now = timezone.now() - timedelta(hours=hours_ago)
    group = ExceptionGroup.objects.create(
        workspace=workspace,
        kind=kind,
        fingerprint=fingerprint(kind, flow_key, subject),
        flow_key=flow_key,
        flow_label=f"Flow {flow_key}",
        subject_key=subject,
        subject_label=subject,
        title=f"old: {subject}",
        order_number=subject,
        first_seen=now,
        last_seen=now,
        state=state,
        occurrence_count=len(events),
        open_count=0 if state in ("resolved", "ignored") else len(events),
        closed_at=now if state in ("resolved", "ignored") else None,
        **fields,
    )
    for key in events:
        Occurrence.objects.create(
            group=group,
            workspace=workspace,
            event_key=key,
            stage="stage",
            message="No email",
            order_number=subject,
            state="skipped" if state in ("resolved", "ignored") else "open",
            first_seen=now,
            last_seen=now,
        )
    Activity.objects.create(group=group, kind=Activity.Kind.CREATED)
    return group


def test_groups_of_one_order_each_become_one_group_per_flow_and_keep_working(world):
    ws = world.workspace
    a = old_group(ws, "contact_without_email", "flow:1", "event:1", events=["event:1"], hours_ago=5)
    b = old_group(
        ws, "contact_without_email", "flow:1", "event:22", events=["event:22"], state="resolved"
    )
    c = old_group(ws, "contact_without_email", "flow:1", "event:333", events=["event:333"])
    apply_action(c, Action.ASSIGN, world.admin, assignee=world.teammate)
    other_flow = old_group(ws, "contact_without_email", "flow:2", "event:4", events=["event:4"])
    totals = old_group(ws, "order_total_mismatch", "flow:1", "order:SO-1", events=["event:5"])
    sku = old_group(ws, "sku_mapping_gap", "flow:1", "sku:ab-12", events=["event:6"], sku="AB-12")
    other_sku = old_group(
        ws, "sku_mapping_gap", "flow:1", "sku:cd-34", events=["event:8"], sku="CD-34"
    )
    stall = old_group(ws, "stalled_flow", "flow:1", "flow:1", events=["alert:1"])

    migration.merge_groups(apps, None)

    merged = ExceptionGroup.objects.get(kind="contact_without_email", flow_key="flow:1")
    assert merged.pk == a.pk  # the oldest keeps its id (and its links)
    assert merged.fingerprint == fingerprint("contact_without_email", "flow:1", "missing:email")
    assert (merged.state, merged.assignee, merged.closed_at) == ("open", world.teammate, None)
    assert (merged.occurrence_count, merged.open_count) == (3, 2)
    assert (merged.title, merged.order_number) == ("Contact without an email: Flow flow:1", "")
    assert sorted(merged.occurrences.values_list("event_key", flat=True)) == [
        "event:1",
        "event:22",
        "event:333",
    ]
    # Their history comes along, with a line saying what happened.
    assert merged.activities.filter(kind=Activity.Kind.ASSIGNED).exists()
    assert "3 groups of this flow merged into one" in merged.activities.last().note
    assert not ExceptionGroup.objects.filter(pk__in=[b.pk, c.pk]).exists()
    # Another flow is another group; other kinds are re-keyed the same way, or left alone.
    other_flow.refresh_from_db()
    assert other_flow.subject_key == "missing:email" and other_flow.occurrence_count == 1
    totals.refresh_from_db()
    assert totals.fingerprint == fingerprint("order_total_mismatch", "flow:1", "totals")
    sku.refresh_from_db()
    assert sku.fingerprint == fingerprint("sku_mapping_gap", "flow:1", "unknown_sku")
    assert (sku.sku, sku.occurrence_count) == ("", 2)
    assert not ExceptionGroup.objects.filter(pk=other_sku.pk).exists()
    stall.refresh_from_db()
    assert stall.fingerprint == fingerprint("stalled_flow", "flow:1", "flow:1")

    # The engine's next occurrence lands in the merged group.
    occurrence = record_occurrence(
        workspace=ws,
        kind="contact_without_email",
        event_key="event:7",
        stage="stage",
        message="No email",
        flow_key="flow:1",
        flow_label="Flow flow:1",
        subject_key="missing:email",
        subject_label="No email",
        order_number="SO-7",
    )
    assert occurrence.group_id == merged.pk
    merged.refresh_from_db()
    assert (merged.occurrence_count, merged.open_count) == (4, 3)


def test_groups_all_closed_merge_into_a_closed_group(world):
    ws = world.workspace
    old_group(ws, "negative_order", "flow:1", "order:A", events=["event:1"], state="ignored")
    old_group(ws, "negative_order", "flow:1", "order:BB", events=["event:2"], state="resolved")

    migration.merge_groups(apps, None)

    merged = ExceptionGroup.objects.get()
    assert (merged.state, merged.open_count, merged.occurrence_count) == ("resolved", 0, 2)
    assert merged.closed_at is not None
