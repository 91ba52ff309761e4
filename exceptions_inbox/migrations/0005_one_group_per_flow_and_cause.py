"""Kinds that opened one group per order (or per event) now open one per flow and cause: the
groups already in the database are merged into the group their occurrences would open today, so
a retry or a new occurrence lands where the old ones are, and nothing stays blocking in a group
the engine no longer records into.

The keys and titles are copied here, not imported, so the migration reads the same whatever the
code becomes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import migrations

# kind → (subject key, subject label, the kind's title): as the engine records them now.
REGROUPED: dict[str, tuple[str, str, str]] = {
    "contact_without_email": ("missing:email", "No email", "Contact without an email"),
    "order_total_mismatch": (
        "totals",
        "Totals that differ from their parts",
        "Order total does not add up",
    ),
    "negative_order": ("negative", "Negative figures", "Order with negative figures"),
    "refund_mismatch": (
        "refunds",
        "Refunds above the order's total",
        "Refund does not match its order",
    ),
    "orphan_expired": (
        "orphan",
        "Waited for orders that never arrived",
        "Waited too long for its order",
    ),
    "sku_mapping_gap": (
        "unknown_sku",
        "SKUs the catalogue does not know",
        "SKU not in the catalogue",
    ),
}

UNCLOSED_ORDER = ("open", "acknowledged", "snoozed")  # the merged group takes the first present


def fingerprint(kind: str, flow_key: str, subject_key: str) -> str:
    return hashlib.sha256(f"{kind}\x1f{flow_key}\x1f{subject_key}".encode()).hexdigest()


def merge_groups(apps: Any, schema_editor: Any) -> None:
    ExceptionGroup = apps.get_model("exceptions_inbox", "ExceptionGroup")
    by_target: dict[tuple[int, str], list[Any]] = {}
    for group in ExceptionGroup.objects.filter(kind__in=list(REGROUPED)).order_by(
        "first_seen", "pk"
    ):
        subject_key = REGROUPED[group.kind][0]
        target = fingerprint(group.kind, group.flow_key, subject_key)
        if group.fingerprint == target and group.subject_key == subject_key:
            by_target.setdefault((group.workspace_id, target), []).insert(0, group)
        else:
            by_target.setdefault((group.workspace_id, target), []).append(group)
    for (_workspace, target), groups in by_target.items():
        _merge(apps, groups, target)


def _merge(apps: Any, groups: list[Any], target: str) -> None:
    """The first group (the one already keyed as today, else the oldest) takes the others'
    occurrences, history and notices, then its counts and state are worked out from them."""
    ExceptionGroup = apps.get_model("exceptions_inbox", "ExceptionGroup")
    Occurrence = apps.get_model("exceptions_inbox", "Occurrence")
    Activity = apps.get_model("exceptions_inbox", "Activity")
    AssignmentNotice = apps.get_model("exceptions_inbox", "AssignmentNotice")
    keep, others = groups[0], groups[1:]
    other_ids = [g.pk for g in others]
    if other_ids:
        kept_keys = set(Occurrence.objects.filter(group=keep).values_list("event_key", flat=True))
        # An event seen in two of the old groups keeps one occurrence (the first moved).
        for occurrence in Occurrence.objects.filter(group_id__in=other_ids).order_by("pk"):
            if occurrence.event_key in kept_keys:
                occurrence.delete()
                continue
            kept_keys.add(occurrence.event_key)
            Occurrence.objects.filter(pk=occurrence.pk).update(group_id=keep.pk)
        Activity.objects.filter(group_id__in=other_ids).update(group_id=keep.pk)
        AssignmentNotice.objects.filter(group_id__in=other_ids).update(group_id=keep.pk)
        ExceptionGroup.objects.filter(pk__in=other_ids).delete()
    subject_key, subject_label, title = REGROUPED[keep.kind]
    fields = _merged_state(groups)
    occurrences = Occurrence.objects.filter(group=keep)
    ExceptionGroup.objects.filter(pk=keep.pk).update(
        fingerprint=target,
        subject_key=subject_key,
        subject_label=subject_label,
        title=f"{title}: {keep.flow_label or 'no flow'}",
        order_number="",
        email="",
        sku="",
        first_seen=min(g.first_seen for g in groups),
        last_seen=max(g.last_seen for g in groups),
        occurrence_count=occurrences.count(),
        open_count=occurrences.filter(state="open").count(),
        **fields,
    )
    if others:
        Activity.objects.create(
            group_id=keep.pk,
            kind="commented",
            note=f"{len(groups)} groups of this flow merged into one: one group per flow and "
            "cause, each order an occurrence.",
        )


def _merged_state(groups: list[Any]) -> dict[str, Any]:
    """Open if any was open (then acknowledged, then snoozed); else resolved if any was, else
    ignored. The assignee and regression mark come from the groups still unclosed."""
    unclosed = [g for g in groups if g.state in UNCLOSED_ORDER]
    if unclosed:
        state = next(s for s in UNCLOSED_ORDER if any(g.state == s for g in unclosed))
        snoozed = [g.snoozed_until for g in unclosed if g.snoozed_until]
        if state == "snoozed" and not snoozed:  # counted snoozes count another group's sightings
            state = "open"
        return {
            "state": state,
            "closed_at": None,
            "is_regression": any(g.is_regression for g in unclosed),
            "assignee_id": next((g.assignee_id for g in unclosed if g.assignee_id), None),
            "snoozed_until": min(snoozed) if state == "snoozed" and snoozed else None,
            "snooze_until_count": None,
        }
    closed = [g.closed_at for g in groups if g.closed_at]
    return {
        "state": "resolved" if any(g.state == "resolved" for g in groups) else "ignored",
        "closed_at": max(closed) if closed else None,
        "is_regression": False,
        "assignee_id": next((g.assignee_id for g in groups if g.assignee_id), None),
        "snoozed_until": None,
        "snooze_until_count": None,
    }


class Migration(migrations.Migration):
    dependencies = [("exceptions_inbox", "0004_open_tab_filter_indexes")]

    operations = [migrations.RunPython(merge_groups, migrations.RunPython.noop)]
