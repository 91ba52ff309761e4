"""Pulling from sources: notifications turned into events by a fetch, polls from a saved cursor,
backfills of a date range. All end in `ingest_events`, so a record seen twice is stored once."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connectors.sources.base import SourceError
from connectors.sources.registry import get_adapter
from exceptions_inbox.recording import record_occurrence
from monitoring.models import Flow, SourceEvent, SourceNotification
from monitoring.pipeline.claims import claim_ids, worker_token
from monitoring.pipeline.flows import mark_backfill_complete
from monitoring.pipeline.ingest import Result, ingest_events

log = logging.getLogger(__name__)

FETCH_BATCH = 50
FETCH_LEASE_SECONDS = 300


def run_fetch(notification_ids: list[int] | None = None) -> int:
    """Fetch due notifications (these, or any); returns how many were fetched."""
    now = timezone.now()
    qs = SourceNotification.objects.filter(
        state=SourceNotification.State.PENDING, next_attempt_at__lte=now
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    if notification_ids:
        qs = qs.filter(pk__in=notification_ids)
    owner = worker_token()
    ids = claim_ids(
        qs.order_by("next_attempt_at", "pk"),
        limit=FETCH_BATCH,
        owner=owner,
        lease_seconds=FETCH_LEASE_SECONDS,
    )
    done = 0
    for note in SourceNotification.objects.filter(pk__in=ids, lease_owner=owner).select_related(
        "connection", "connection__workspace"
    ):
        done += fetch_one(note)
    return done


def fetch_one(note: SourceNotification) -> int:
    adapter = get_adapter(note.connection.kind)
    now = timezone.now()
    try:
        if adapter is None:
            raise SourceError(f"No adapter for {note.connection.kind}.", permanent=True)
        events = adapter.fetch(note.connection, note.payload)
    except SourceError as exc:
        state = (
            SourceNotification.State.FAILED if exc.permanent else SourceNotification.State.PENDING
        )
        SourceNotification.objects.filter(pk=note.pk).update(
            state=state,
            error=exc.message[:2000],
            lease_owner="",
            lease_until=None,
            next_attempt_at=now + timedelta(seconds=min(30 * 2 ** min(note.attempts, 8), 3600)),
        )
        return 0
    with transaction.atomic():
        results = ingest_events(
            note.connection, events, via=SourceEvent.Via.NOTIFICATION, notification=note
        )
        warnings = getattr(events, "warnings", ())  # a `Fetched` carries the adapter's warnings
        flow = Flow.objects.filter(source=note.connection, is_active=True).order_by("pk").first()
        if warnings and flow is not None:
            file_warnings(flow, warnings)
        SourceNotification.objects.filter(pk=note.pk).update(
            state=SourceNotification.State.DONE,
            fetched_at=now,
            events_count=sum(r.status == "accepted" for r in results),
            error="; ".join(str(r.errors) for r in results if r.errors)[:2000],
            lease_owner="",
            lease_until=None,
        )
    return 1


def poll_flow(flow_id: int, *, max_pages: int = 20) -> int:
    """Page the flow's source from its saved cursor; the poller reaching the present completes a
    running backfill. Returns how many events were accepted."""
    flow = Flow.objects.select_related("source", "workspace").filter(pk=flow_id).first()
    if flow is None or not flow.is_active:
        return 0
    adapter = get_adapter(flow.source.kind)
    if adapter is None or not adapter.can_poll:
        return 0
    accepted = 0
    for _ in range(max_pages):
        page = adapter.poll(flow.source, flow.poll_cursor)
        with transaction.atomic():
            results = ingest_events(
                flow.source,
                page.events,
                via=SourceEvent.Via.POLL,
                backfill=flow.backfill_state == Flow.Backfill.RUNNING,
            )
            accepted += _accepted(results)
            file_warnings(flow, page.warnings)
            Flow.objects.filter(pk=flow.pk).update(
                poll_cursor=page.cursor, last_polled_at=timezone.now()
            )
            flow.poll_cursor = page.cursor
        if page.reached_present:
            if flow.backfill_state == Flow.Backfill.RUNNING:
                mark_backfill_complete(flow, by="poller")
            break
    return accepted


def backfill_range(flow: Flow, start: datetime, end: datetime) -> int:
    """Page in the source's history between two dates as backfill events."""
    adapter = get_adapter(flow.source.kind)
    if adapter is None:
        return 0
    cursor = ""
    accepted = 0
    while True:
        page = adapter.backfill(flow.source, start, end, cursor)
        with transaction.atomic():
            accepted += _accepted(
                ingest_events(flow.source, page.events, via=SourceEvent.Via.BACKFILL, backfill=True)
            )
        if page.reached_present or not page.events or page.cursor == cursor:
            return accepted
        cursor = page.cursor


def file_warnings(flow: Flow, warnings: Iterable[Mapping[str, str]]) -> None:
    """A page's warnings (an unknown status, a skipped record) into the inbox as `source_warning`:
    one group per flow and message, one occurrence per subject (e.g. the order)."""
    for warning in warnings:
        code = str(warning.get("code") or "warning")
        message = str(warning.get("message") or code)
        subject = str(warning.get("subject") or "")
        digest = hashlib.sha256(f"{code}|{message}".encode()).hexdigest()[:24]
        record_occurrence(
            workspace=flow.workspace,
            kind="source_warning",
            event_key=f"warning:{flow.pk}:{digest}:{subject}"[:100],
            stage="poll",
            message=message,
            flow_key=flow.key,
            flow_label=flow.name,
            subject_key=f"{code}:{digest}",
            subject_label=message[:255],
            order_number=subject[:100] if code == "unknown_status" else "",
            detail={**warning},
        )


def _accepted(results: list[Result]) -> int:
    return sum(r.status == "accepted" for r in results)
