"""The engine's hooks for the inbox (registered in MonitoringConfig.ready): retry re-runs blocked
events from staging with today's configuration; resolve/ignore skip them; the SKU fix adds an
alias and retries every event it blocked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from exceptions_inbox.kinds import register_hooks
from monitoring.models import Flow, SkuAlias, SourceEvent
from monitoring.pipeline.normalise import clean_sku, sku_match_key

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from exceptions_inbox.models import ExceptionGroup, Occurrence

STAGING_KINDS = (
    "sku_mapping_gap",
    "contact_without_email",
    "orphan_expired",
    "order_total_mismatch",
    "currency_mismatch",
    "guest_policy",
)


def event_ids(occurrences: Sequence[Occurrence]) -> list[int]:
    ids = []
    for occurrence in occurrences:
        prefix, _, pk = occurrence.event_key.partition(":")
        if prefix == "event" and pk.isdigit():
            ids.append(int(pk))
    return ids


def retry_events(occurrences: Sequence[Occurrence]) -> None:
    """Stage the blocked events again (their occurrences clear when they get through)."""
    ids = event_ids(occurrences)
    if not ids:
        return
    qs = SourceEvent.objects.filter(pk__in=ids, state=SourceEvent.State.FAILED)
    flows = set(qs.values_list("flow_id", flat=True))
    # An expired orphan gets a fresh hold when retried.
    qs.filter(hold=SourceEvent.Hold.ORPHAN).update(hold_deadline=None, received_at=timezone.now())
    qs.update(
        state=SourceEvent.State.RECEIVED,
        next_attempt_at=timezone.now(),
        lease_owner="",
        lease_until=None,
    )
    from monitoring.tasks import wake_staging

    wake_staging({f for f in flows if f is not None})


def skip_events(
    group: ExceptionGroup, occurrences: Sequence[Occurrence], actor: User | None, note: str
) -> None:
    who = actor.get_username() if actor is not None else "the system"
    reason = f"{group.get_state_display()} in the inbox by {who}" + (f": {note}" if note else ".")
    SourceEvent.objects.filter(
        pk__in=event_ids(occurrences),
        state__in=(SourceEvent.State.FAILED, SourceEvent.State.HELD),
    ).update(state=SourceEvent.State.SKIPPED, reason=reason[:2000])


def render_event(occurrence: Occurrence) -> dict[str, Any]:
    ids = event_ids([occurrence])
    event = SourceEvent.objects.filter(pk__in=ids).select_related("flow").first()
    if event is None:
        return {}
    return {
        "event": event,
        "envelope": event.envelope,
        "state": event.get_state_display(),
        "reason": event.reason,
    }


def add_sku_alias(group: ExceptionGroup, data: dict[str, Any], actor: User) -> str:
    """Fix a SKU gap: the group's SKU is another spelling of `data["sku"]`."""
    target = clean_sku(str(data.get("sku") or ""))
    if not target:
        raise ValueError("Name the catalogue SKU this one stands for.")
    flow = None
    if group.flow_key.startswith("flow:"):
        flow = Flow.objects.filter(pk=group.flow_key[5:], workspace=group.workspace).first()
    case_sensitive = bool(flow and flow.sku_case_sensitive)
    alias = sku_match_key(clean_sku(group.sku or group.subject_label), case_sensitive)
    with transaction.atomic():
        SkuAlias.objects.update_or_create(
            workspace=group.workspace, flow=flow, alias_key=alias, defaults={"sku": target}
        )
        retry_events(list(group.occurrences.filter(state="open")))
    return f"{group.sku or alias} now means {target}; its events are being retried."


def register() -> None:
    for kind in STAGING_KINDS:
        register_hooks(
            kind,
            retry=retry_events,
            on_resolve=skip_events,
            on_ignore=skip_events,
            render_occurrence=render_event,
        )
    register_hooks("sku_mapping_gap", fix=add_sku_alias)
