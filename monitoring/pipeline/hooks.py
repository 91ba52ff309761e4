"""The engine's hooks for the inbox (registered in MonitoringConfig.ready): retry re-runs blocked
events from staging with today's configuration; resolve/ignore skip them; the SKU fix adds an
alias and retries every event it blocked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from exceptions_inbox.kinds import Prerequisite, register_hooks
from monitoring.models import Flow, SkuAlias, SourceEvent
from monitoring.pipeline.normalise import clean_sku, sku_match_key
from monitoring.pipeline.sku_suggestions import suggest_products
from monitoring.pipeline.wake import wake_staging_pairs

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from exceptions_inbox.models import ExceptionGroup, Occurrence

STAGING_KINDS = (
    "sku_mapping_gap",
    "contact_without_email",
    "orphan_expired",
    "order_total_mismatch",
    "negative_order",
    "currency_mismatch",
    "guest_policy",
    "refund_mismatch",
)


def event_ids(occurrences: Sequence[Occurrence], kind: str = "event") -> list[int]:
    """The row ids the occurrences name (`event:<pk>`, or another `kind` such as `enrolment`)."""
    ids = []
    for occurrence in occurrences:
        prefix, _, pk = occurrence.event_key.partition(":")
        if prefix == kind and pk.isdigit():
            ids.append(int(pk))
    return ids


def retry_events(occurrences: Sequence[Occurrence]) -> None:
    """Stage the blocked events again (their occurrences clear when they get through)."""
    ids = event_ids(occurrences)
    if not ids:
        return
    qs = SourceEvent.objects.filter(pk__in=ids, state=SourceEvent.State.FAILED)
    flows = set(qs.order_by().values_list("flow_id", "lane").distinct())
    # An expired orphan gets a fresh hold when retried.
    qs.filter(hold=SourceEvent.Hold.ORPHAN).update(hold_deadline=None, received_at=timezone.now())
    qs.update(
        state=SourceEvent.State.RECEIVED,
        next_attempt_at=timezone.now(),
        lease_owner="",
        lease_until=None,
    )
    wake_staging_pairs(flows)


def skip_events(
    group: ExceptionGroup, occurrences: Sequence[Occurrence], actor: User | None, note: str
) -> None:
    who = actor.get_username() if actor is not None else "the system"
    reason = f"{group.get_state_display()} in the inbox by {who}" + (f": {note}" if note else ".")
    # RECEIVED too: a retry sent back and not yet claimed is skipped with the rest. One a worker
    # has already claimed ends skipped when it fails again (`record_occurrence` knows its
    # attempt began before the resolve), or delivered if it gets through.
    SourceEvent.objects.filter(
        pk__in=event_ids(occurrences),
        state__in=(SourceEvent.State.FAILED, SourceEvent.State.HELD, SourceEvent.State.RECEIVED),
    ).filter(Q(lease_owner="") | Q(lease_until__lt=timezone.now())).update(
        state=SourceEvent.State.SKIPPED, reason=reason[:2000]
    )


def render_event(occurrence: Occurrence) -> dict[str, Any]:
    return render_events([occurrence]).get(occurrence.pk, {})


def render_events(occurrences: Sequence[Occurrence]) -> dict[int, dict[str, Any]]:
    """The blocked events as the inbox's group page shows them ({"title", "fields", "payload"},
    see exceptions_inbox/kinds.py), a page of them in one query."""
    wanted = {o.pk: event_ids([o]) for o in occurrences}
    events = SourceEvent.objects.select_related("flow").in_bulk(
        [pk for ids in wanted.values() for pk in ids]
    )
    rendered: dict[int, dict[str, Any]] = {}
    for occurrence_pk, ids in wanted.items():
        event = events.get(ids[0]) if ids else None
        if event is None:
            continue
        rendered[occurrence_pk] = {
            "title": f"{event.event_type} from {event.flow.name if event.flow else 'no flow'}",
            "fields": {
                "State": event.get_state_display(),
                "Reason": event.reason,
                "Received": event.received_at.isoformat(timespec="seconds"),
            },
            "payload": event.envelope,
        }
    return rendered


def flow_of(group: ExceptionGroup) -> Flow | None:
    """The group's flow (its key is `Flow.key`), in the group's workspace."""
    prefix, _, pk = group.flow_key.partition(":")
    if prefix != "flow" or not pk.isdigit():
        return None
    return (
        Flow.objects.filter(pk=int(pk), workspace_id=group.workspace_id)
        .select_related("source", "workspace")
        .first()
    )


def guest_prerequisite(group: ExceptionGroup) -> Prerequisite | None:
    """guest_policy: a retry re-reads the same guest order, excluded again while the flow's
    policy excludes guests."""
    flow = flow_of(group)
    if flow is None or flow.guest_policy != Flow.GuestPolicy.EXCLUDE:
        return None
    return Prerequisite(
        fix=f"change {flow.name}'s guest policy to merge guests (or ignore the group)",
        url=reverse("config:flow", kwargs={"ws": flow.workspace.slug, "pk": flow.pk}),
        link_text=f"{flow.name}: settings",
        who="only an admin",
    )


def currency_prerequisite(group: ExceptionGroup) -> Prerequisite | None:
    """currency_mismatch: a retry re-reads the same order, in the same foreign currency."""
    currency = group.subject_key.removeprefix("currency:")
    if not group.subject_key.startswith("currency:") or currency == group.workspace.currency:
        return None
    return Prerequisite(
        fix=f"have the source send these in {group.workspace.currency}, not {currency} "
        "(resolve the group to skip them)",
        who="the source system's owner",
    )


def _only_unknown_sku(group: ExceptionGroup) -> str:
    """The one SKU the group's blocking occurrences lack, or "" when they lack several."""
    skus = set(
        group.occurrences.filter(state="open")
        .order_by()
        .values_list("sku", flat=True)
        .distinct()[:2]
    )
    return skus.pop() if len(skus) == 1 else ""


def resend_prerequisite(group: ExceptionGroup) -> Prerequisite | None:
    """order_total_mismatch, negative_order: the event's own figures fail it, and a retry reads
    the same event; only a corrected document from the source (a new event) gets through."""
    return Prerequisite(
        fix="have the source correct these orders and send them again: a retry re-reads the same "
        "figures, while a corrected order goes through on its own (then resolve this group)",
        who="the source system's owner",
    )


def add_sku_alias(group: ExceptionGroup, data: dict[str, Any], actor: User) -> str:
    """Fix a SKU gap: `data["alias"]` (one unknown SKU of the group; the group's own SKU when it
    names one) is another spelling of `data["sku"]`. Retries the events that SKU blocked."""
    target = clean_sku(str(data.get("sku") or ""))
    if not target:
        raise ValueError("Name the catalogue SKU this one stands for.")
    flow = None
    if group.flow_key.startswith("flow:"):
        flow = Flow.objects.filter(pk=group.flow_key[5:], workspace=group.workspace).first()
    case_sensitive = bool(flow and flow.sku_case_sensitive)
    unknown = clean_sku(str(data.get("alias") or group.sku or _only_unknown_sku(group)))
    if not unknown:
        raise ValueError("Name the unknown SKU the alias is for.")
    alias = sku_match_key(unknown, case_sensitive)
    blocked = [
        o
        for o in group.occurrences.filter(state="open")
        if not o.sku or sku_match_key(clean_sku(o.sku), case_sensitive) == alias
    ]
    with transaction.atomic():
        SkuAlias.objects.update_or_create(
            workspace=group.workspace, flow=flow, alias_key=alias, defaults={"sku": target}
        )
        retry_events(blocked)
    return f"{unknown} now means {target}; its {len(blocked)} event(s) are being retried."


def register() -> None:
    for kind in STAGING_KINDS:
        register_hooks(
            kind,
            retry=retry_events,
            on_resolve=skip_events,
            on_ignore=skip_events,
            render_occurrence=render_event,
            render_occurrences=render_events,
        )
    register_hooks("sku_mapping_gap", fix=add_sku_alias, suggest=suggest_products)
    register_hooks("guest_policy", prerequisite=guest_prerequisite)
    register_hooks("currency_mismatch", prerequisite=currency_prerequisite)
    for kind in ("order_total_mismatch", "negative_order"):
        register_hooks(kind, prerequisite=resend_prerequisite)
