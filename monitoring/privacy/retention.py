"""Retention: payloads are deleted once they are older than their retention period.

What goes: the raw body of a webhook request, the personal part of an event's envelope (the
canonical event: identity, names, addresses, lines) and a notification's payload. What stays, so
a timeline still reads: every row, its state, timestamps, event type and keys. A redacted payload
says so: ``{"redacted": "retention", "at": ...}`` (an envelope keeps its non-personal head).

Only settled work is redacted: an event still to stage or deliver (or failed, waiting in the inbox
for a retry) keeps its envelope until it is delivered or skipped, and a request body stays while
one of its events is unsettled.

The period is `settings.PAYLOAD_RETENTION_DAYS` (env, default 30), unless a flow sets its own
(`Flow.payload_retention_days`, on the flow's thresholds and policies page): an event goes after
its flow's period; a webhook request body or a notification payload, which may hold events of
every flow of its source connection, after the shortest period among those flows (so no flow's
data outlives its policy in a shared body). An event whose flow is gone takes the default.

The sweeper works in batches of `batch_size` rows, one short transaction each, so it never holds
locks long; several sweepers may run at once (beat fired twice, a manual run): on PostgreSQL each
batch claims its rows with ``FOR UPDATE SKIP LOCKED``, and every update repeats its condition, so a
row is redacted once and a second sweeper skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from monitoring.models import Flow, SourceEvent, SourceNotification, WebhookRequest

DEFAULT_BATCH = 500
SETTLED = (SourceEvent.State.DELIVERED, SourceEvent.State.SKIPPED)
# The head of an envelope that a timeline needs and that names nobody.
ENVELOPE_HEAD = ("schema", "event_type", "source_event_id", "occurred_at", "source_updated_at")


def retention_days() -> int:
    return int(getattr(settings, "PAYLOAD_RETENTION_DAYS", 30))


@dataclass
class Periods:
    """Which rows are past their period: per flow (events) and per source connection (request
    bodies, notification payloads), as filters on `received_at`."""

    events: Q
    connections: Q


def periods(now: datetime, default_days: int) -> Periods:
    default_cutoff = now - timedelta(days=default_days)
    own: dict[int, list[int]] = {}  # days → flows with a period of their own
    shortest: dict[int, int] = {}  # source connection → its flows' shortest period
    for pk, source_id, days in Flow.objects.values_list(
        "pk", "source_id", "payload_retention_days"
    ):
        period = days or default_days
        if days:
            own.setdefault(days, []).append(pk)
        shortest[source_id] = min(period, shortest.get(source_id, period))
    events = Q(received_at__lt=default_cutoff)
    if own:
        overridden = [pk for ids in own.values() for pk in ids]
        events = (Q(flow__isnull=True) | ~Q(flow_id__in=overridden)) & events
        for days, ids in own.items():
            events |= Q(flow_id__in=ids, received_at__lt=now - timedelta(days=days))
    by_days: dict[int, list[int]] = {}
    for connection_id, days in shortest.items():
        if days != default_days:
            by_days.setdefault(days, []).append(connection_id)
    connections = Q(received_at__lt=default_cutoff)
    if by_days:
        special = [pk for ids in by_days.values() for pk in ids]
        connections = ~Q(connection_id__in=special) & connections
        for days, ids in by_days.items():
            connections |= Q(connection_id__in=ids, received_at__lt=now - timedelta(days=days))
    return Periods(events, connections)


def marker(reason: str, now: datetime) -> dict[str, Any]:
    return {"redacted": reason, "at": now.isoformat()}


def redacted_envelope(envelope: Any, reason: str, now: datetime) -> dict[str, Any]:
    """The envelope without its personal data: the head, the source and the entity's type and key
    (`entity_key` is the engine's key; erasure blanks it too when it names the person)."""
    kept: dict[str, Any] = marker(reason, now)
    if not isinstance(envelope, dict):
        return kept
    for name in ENVELOPE_HEAD:
        if name in envelope:
            kept[name] = envelope[name]
    source = envelope.get("source")
    if isinstance(source, dict):
        kept["source"] = {k: source[k] for k in ("system", "account") if k in source}
    entity = envelope.get("entity")
    if isinstance(entity, dict):
        kept["entity"] = {k: entity[k] for k in ("type", "key") if k in entity}
    return kept


def is_redacted(payload: Any) -> bool:
    return isinstance(payload, dict) and "redacted" in payload


@dataclass
class SweepReport:
    requests: int = 0
    events: int = 0
    notifications: int = 0
    batches: int = 0
    cutoff: datetime | None = None
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.requests + self.events + self.notifications


def _claim(qs: models.QuerySet[Any], batch_size: int) -> list[int]:
    """Ids of up to `batch_size` rows, locked for this transaction on PostgreSQL (rows another
    sweeper holds are skipped); on SQLite the write lock of the transaction serialises sweepers."""
    return list(
        qs.order_by("pk")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:batch_size]
    )


def _sweep(
    qs: models.QuerySet[Any],
    redact: Callable[[list[int]], int],
    batch_size: int,
    max_batches: int | None,
    report: SweepReport,
) -> int:
    done = 0
    while max_batches is None or report.batches < max_batches:
        with transaction.atomic():
            ids = _claim(qs, batch_size)
            if not ids:
                break
            done += redact(ids)
        report.batches += 1
        if len(ids) < batch_size:
            break
    return done


def sweep_retention(
    *,
    now: datetime | None = None,
    days: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    max_batches: int | None = None,
) -> SweepReport:
    """Redact every payload older than its retention period (its flow's, else `days`, else
    PAYLOAD_RETENTION_DAYS); returns what was redacted (`cutoff`: the default period's)."""
    now = now or timezone.now()
    default_days = retention_days() if days is None else days
    cutoff = now - timedelta(days=default_days)
    report = SweepReport(cutoff=cutoff)
    due = periods(now, default_days)

    events = SourceEvent.objects.filter(due.events, state__in=SETTLED).exclude(
        envelope__has_key="redacted"
    )

    def redact_events(ids: list[int]) -> int:
        rows = list(
            SourceEvent.objects.filter(pk__in=ids)
            .exclude(envelope__has_key="redacted")
            .only("pk", "envelope")
        )
        for row in rows:
            row.envelope = redacted_envelope(row.envelope, "retention", now)
        SourceEvent.objects.bulk_update(rows, ["envelope"])
        return len(rows)

    report.events = _sweep(events, redact_events, batch_size, max_batches, report)

    unsettled = SourceEvent.objects.filter(request=OuterRef("pk")).exclude(state__in=SETTLED)
    requests = (
        WebhookRequest.objects.filter(due.connections)
        .exclude(headers__has_key="redacted")
        .filter(~Exists(unsettled))
    )

    def redact_requests(ids: list[int]) -> int:
        return (
            WebhookRequest.objects.filter(pk__in=ids)
            .exclude(headers__has_key="redacted")
            .update(body=b"", headers=marker("retention", now))
        )

    report.requests = _sweep(requests, redact_requests, batch_size, max_batches, report)

    notifications = (
        SourceNotification.objects.filter(due.connections)
        .exclude(state=SourceNotification.State.PENDING)
        .exclude(payload__has_key="redacted")
    )

    def redact_notifications(ids: list[int]) -> int:
        return (
            SourceNotification.objects.filter(pk__in=ids)
            .exclude(payload__has_key="redacted")
            .update(payload=marker("retention", now))
        )

    report.notifications = _sweep(
        notifications, redact_notifications, batch_size, max_batches, report
    )
    return report


__all__ = [
    "Periods",
    "SweepReport",
    "is_redacted",
    "marker",
    "periods",
    "redacted_envelope",
    "retention_days",
    "sweep_retention",
]
