"""Reconciliation runs and repairs, and the opt-out round trip (DotDigital's suppressions written
back to the source).

A run compares, per flow, the engine's state with DotDigital (`reconcile_dotdigital`) and, where
the flow's source can be polled, with the source (`reconcile_source`). Each difference is a row and
a `reconciliation_difference` occurrence (money to finance, segment fields and missing contacts to
marketing, orders never received to ops, by `team_slug`); a difference not found again by the next
run is cleared. "Repair" re-sends the engine's value through the outbox (an upsert by key, so it
applies once); for a difference with the source, it takes the source's events in through the
engine's intake (deduplicated on their source event ids, so that too applies once).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from celery import current_app
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.models import ConfigChange
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import (
    ConnectionProblem,
    DotDigitalError,
    explain,
)
from connectors.sources.base import SourceAdapter, SourceError
from connectors.sources.registry import get_adapter
from exceptions_inbox.kinds import Prerequisite, hooks_of
from exceptions_inbox.kinds import register_hooks as register
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import (
    Customer,
    Flow,
    FlowWatch,
    OptOutWriteBack,
    Order,
    ReconciliationDifference,
    ReconciliationRun,
    SourceEvent,
    Suppression,
)
from monitoring.pipeline.hooks import flow_of
from monitoring.pipeline.ingest import ingest_events
from monitoring.pipeline.mapping import Context, OpSpec, contact_spec, order_spec
from monitoring.pipeline.plan import Planned, write_operations
from monitoring.watch.differences import Diff, Found, save_found
from monitoring.watch.reconcile_dotdigital import (
    LEASE,
    RUN_DEADLINE,
    LeaseLost,
    Paused,
    Reader,
    compare,
)
from monitoring.watch.reconcile_source import compare_source

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from exceptions_inbox.models import ExceptionGroup, Occurrence

log = logging.getLogger(__name__)

KIND = "reconciliation_difference"
RECONCILE_TASK = "monitoring.reconcile_flow"
SOURCE_KINDS = (Diff.SOURCE_MISSING, Diff.SOURCE_TOTAL)


def run_reconciliation(
    flow: Flow,
    *,
    sample: int | None = None,
    client: DotDigitalClient | None = None,
    slice_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReconciliationRun:
    """Compare the flow's state with DotDigital: continue the flow's unfinished run where it
    stopped (with its own sample), or start one. Returns the run finished, failed, or still
    running: paused
    (`resume_at`: DotDigital kept failing, or this worker's `slice_seconds` are up) or compared
    by another worker now."""
    run = start_run(flow, sample)
    if run.state != ReconciliationRun.State.RUNNING:
        return run
    owner = claim(run)
    if owner is None:
        return run  # another worker is comparing it now
    if flow.destination is None:  # removed since the run started
        return _fail(run, "The flow has no DotDigital connection.", owner)
    client = client or DotDigitalClient.for_connection(flow.destination)
    until = None if slice_seconds is None else time.monotonic() + slice_seconds
    reader = Reader(client, run, owner, until=until, sleep=sleep)
    try:
        compare(flow, reader)
        found = compare_source(flow, run, run.sample)
        _finish(flow, run, owner, found)
    except LeaseLost:
        pass
    except Paused as stop:
        _release(run, owner, stop.resume_in, stop.reason)
    except ConnectionProblem as exc:
        _fail(run, connection_sentence(exc), owner)
    except DotDigitalError as exc:  # a record error on a read: our request is wrong, not the data
        _fail(run, f"DotDigital refused a read ({exc.path}, {exc.status} {exc.code}).", owner)
    except BaseException:
        # The worker stops (a time limit, a crash): its progress stays and the next one resumes.
        _release(run, owner, 0.0, "The worker comparing it stopped.")
        raise
    run.refresh_from_db()
    return run


def start_run(flow: Flow, sample: int | None = None) -> ReconciliationRun:
    """The flow's unfinished run, or a new one (failed at once without a DotDigital
    connection). A run unfinished `RUN_DEADLINE` after its start fails, saying so."""
    now = timezone.now()
    with transaction.atomic():
        # One run at a time per flow: the flow's row is the lock (SQLite's write lock is).
        Flow.objects.select_for_update().filter(pk=flow.pk).first()
        for stale in ReconciliationRun.objects.filter(
            flow=flow, state=ReconciliationRun.State.RUNNING, started_at__lt=now - RUN_DEADLINE
        ):
            _fail(
                stale,
                f"Not finished within {RUN_DEADLINE.total_seconds() / 3600:g} hours of its start "
                f"({stale.checked} of {stale.total or 0} compared"
                f"{': ' + stale.pause_reason if stale.pause_reason else ''}); a new run starts over.",
            )
        run = (
            ReconciliationRun.objects.filter(flow=flow, state=ReconciliationRun.State.RUNNING)
            .order_by("-started_at")
            .first()
        )
        if run is not None:
            return run
        size = FlowWatch.for_flow(flow).reconcile_sample if sample is None else sample
        run = ReconciliationRun.objects.create(
            workspace_id=flow.workspace_id, flow=flow, sample=size, started_at=now
        )
    if flow.destination is None:
        return _fail(run, "The flow has no DotDigital connection.")
    return run


def claim(run: ReconciliationRun) -> str | None:
    """Take the run's lease (free, or run out: its worker died); the owner's token, or None."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    taken = (
        ReconciliationRun.objects.filter(pk=run.pk, state=ReconciliationRun.State.RUNNING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_owner=owner, lease_until=now + LEASE, resume_at=None)
    )
    if not taken:
        return None
    run.refresh_from_db()
    return owner


def _release(run: ReconciliationRun, owner: str, resume_in: float, reason: str) -> None:
    """Stop comparing for now: the progress saved stays, another worker may continue."""
    ReconciliationRun.objects.filter(pk=run.pk, lease_owner=owner).update(
        lease_owner="",
        lease_until=None,
        resume_at=timezone.now() + timedelta(seconds=resume_in),
        pause_reason=reason,
        retries=run.retries,
    )


def connection_sentence(exc: ConnectionProblem) -> str:
    """Why the connection cannot work, in words, with what to do (then run again)."""
    return f"{explain(exc)} Then run the reconciliation again."


def paused_for(run: ReconciliationRun) -> float | None:
    """Seconds until a paused run should continue; None when it is not paused."""
    if run.state != ReconciliationRun.State.RUNNING or run.resume_at is None or run.lease_owner:
        return None
    return max(0.0, (run.resume_at - timezone.now()).total_seconds())


def queue_run(flow: Flow, countdown: float = 0.0) -> bool:
    """Have a worker continue the flow's run (by task name: the tasks import this module).
    False when the broker could not take the message: the run waits for the next start."""
    try:
        current_app.signature(RECONCILE_TASK).apply_async(
            (flow.pk,), queue="bulk", countdown=countdown
        )
    except Exception:  # the broker is down: the run keeps its progress for the next start
        log.warning("could not queue reconciliation of flow %s", flow.pk, exc_info=True)
        return False
    return True


def _finish(flow: Flow, run: ReconciliationRun, owner: str, found: list[Found]) -> None:
    """Store the source's differences, open each of the run's differences in the inbox, clear
    the earlier ones not found again, and mark the run finished."""
    now = timezone.now()
    with transaction.atomic():
        done = ReconciliationRun.objects.filter(
            pk=run.pk, lease_owner=owner, state=ReconciliationRun.State.RUNNING
        ).update(state=ReconciliationRun.State.FINISHED, finished_at=now, lease_owner="")
        if not done:
            raise LeaseLost()
        save_found(run, found)
        diffs = list(run.differences.all())
        for diff in diffs:
            _open(flow, run, diff)
        previous = ReconciliationDifference.objects.filter(
            run__flow=flow, repaired_at__isnull=True, run__started_at__lt=run.started_at
        ).exclude(run=run)
        seen = {(d.kind, d.subject, d.field) for d in diffs}
        gone = [d.event_key for d in previous if (d.kind, d.subject, d.field) not in seen]
        clear_occurrences(flow.workspace, gone)
        run.mismatched = sum(d.kind in (Diff.FIELD, Diff.RECORD, Diff.SOURCE_TOTAL) for d in diffs)
        run.missing = sum(
            d.kind in (Diff.CONTACT_MISSING, Diff.RECORD_MISSING, Diff.SOURCE_MISSING)
            for d in diffs
        )
        ReconciliationRun.objects.filter(pk=run.pk).update(
            checked=run.checked,
            matched=run.matched,
            mismatched=run.mismatched,
            missing=run.missing,
            retries=run.retries,
            source_orders=run.source_orders,
            source_window_start=run.source_window_start,
            source_window_end=run.source_window_end,
            source_error=run.source_error,
            phase="",
            cursor="",
            lease_until=None,
            resume_at=None,
            pause_reason="",
        )


def _open(flow: Flow, run: ReconciliationRun, diff: ReconciliationDifference) -> None:
    """The inbox occurrence of one difference."""
    label = f"{diff.field} differs" if diff.field else diff.get_kind_display()
    if diff.kind in SOURCE_KINDS:
        label = diff.get_kind_display()
        other = f"{flow.source.name} has {diff.source_value or '—'}"
    else:
        other = f"DotDigital has {diff.dotdigital_value or '—'}"
    record_occurrence(
        workspace=flow.workspace,
        kind=KIND,
        event_key=diff.event_key,
        stage="reconcile",
        message=f"{diff.subject}: Syncdesk has {diff.engine_value or '—'}, {other}",
        title=f"Reconciliation: {label} ({flow.name})",
        flow_key=flow.key,
        flow_label=flow.name,
        subject_key=f"reconcile:{diff.kind if diff.kind in SOURCE_KINDS else diff.field or diff.kind}",
        subject_label=label,
        detail={"run": run.pk, "difference": diff.pk},
        order_number=diff.order_number,
        email=diff.email,
        team_slug=diff.team_slug,
    )


def _fail(run: ReconciliationRun, error: str, owner: str | None = None) -> ReconciliationRun:
    """The run stops for good with `error`; its counts stay those it compared."""
    rows = ReconciliationRun.objects.filter(pk=run.pk, state=ReconciliationRun.State.RUNNING)
    if owner is not None:
        rows = rows.filter(lease_owner=owner)
    rows.update(
        state=ReconciliationRun.State.FAILED,
        error=error,
        finished_at=timezone.now(),
        lease_owner="",
        lease_until=None,
        resume_at=None,
        retries=run.retries,
    )
    run.refresh_from_db()
    return run


# -- repair -----------------------------------------------------------------------------------


def enqueue(flow: Flow, spec: OpSpec) -> None:
    """Queue one write through the outbox (coalesced with an open write of the same key)."""
    assert flow.destination_id is not None
    now = timezone.now()
    planned = Planned(flow.destination_id, flow.workspace_id, spec, SourceEvent.Lane.REALTIME)
    with transaction.atomic():
        write_operations({(flow.destination_id, spec.key): planned}, now, Context(now=now))


def repair(diff: ReconciliationDifference, actor: User | None) -> bool:
    """Re-send the engine's value for this difference through the outbox. False when it was
    repaired already, or there is nothing to send (no DotDigital connection, subject gone)."""
    flow = diff.run.flow
    if diff.kind in SOURCE_KINDS:
        return repair_from_source(diff, actor)
    if flow.destination_id is None:
        return False
    mappings = list(flow.field_mappings.all())
    specs: list[OpSpec] = []
    if diff.kind in (Diff.CONTACT_MISSING, Diff.FIELD):
        customer = Customer.objects.filter(workspace_id=flow.workspace_id, email=diff.email).first()
        if customer is not None:
            specs.append(contact_spec(customer, mappings, flow.sends_aggregates))
    else:
        order = (
            Order.objects.filter(workspace_id=flow.workspace_id)
            .filter(Q(order_number=diff.order_number) | Q(channel_order_ref=diff.order_number))
            .select_related("customer")
            .first()
        )
        if order is not None:
            if order.customer is not None:  # the contact before the record that refers to it
                specs.append(contact_spec(order.customer, mappings, flow.sends_aggregates))
            specs.append(order_spec(order, order.email, list(order.shipments.all())))
    if not specs:
        return False
    with transaction.atomic():
        claimed = ReconciliationDifference.objects.filter(
            pk=diff.pk, repaired_at__isnull=True
        ).update(repaired_at=timezone.now(), repaired_by=actor)
        if not claimed:
            return False
        for spec in specs:
            enqueue(flow, spec)
    clear_occurrences(flow.workspace, [diff.event_key])
    diff.refresh_from_db()
    return True


def repair_from_source(diff: ReconciliationDifference, actor: User | None) -> bool:
    """Take the source's events for this order in through the engine's intake (as a poll would);
    they then stage and deliver like any other. False when already repaired, or when Syncdesk
    already holds every one of those events (taking them in again would change nothing)."""
    flow = diff.run.flow
    events = [e for e in diff.source_events if isinstance(e, dict)]
    if not events:
        return False
    with transaction.atomic():
        claimed = ReconciliationDifference.objects.filter(
            pk=diff.pk, repaired_at__isnull=True
        ).update(repaired_at=timezone.now(), repaired_by=actor)
        if not claimed:
            return False
        results = ingest_events(flow.source, events, via=SourceEvent.Via.POLL)
        if not any(r.status == "accepted" for r in results):
            transaction.set_rollback(True)
            return False
    clear_occurrences(flow.workspace, [diff.event_key])
    diff.refresh_from_db()
    return True


def repair_occurrences(occurrences: Sequence[Occurrence]) -> None:
    """The inbox's retry for reconciliation differences: repair each."""
    ids = [
        int(o.event_key.split(":", 1)[1])
        for o in occurrences
        if o.event_key.startswith("reconciliation:") and o.event_key.split(":", 1)[1].isdigit()
    ]
    for diff in ReconciliationDifference.objects.filter(pk__in=ids).select_related("run__flow"):
        repair(diff, None)


# -- opt-out round trip ---------------------------------------------------------------------

WRITE_BACK_BATCH = 200


def queue_write_backs(flow: Flow) -> int:
    """One write-back per opt-out DotDigital holds for this flow's destination and a contact the
    flow knows; returns how many were new."""
    if flow.destination_id is None:
        return 0
    # Driven from the destination's suppressions (hundreds, not millions), in steps that each
    # probe an index with a list: customers by (workspace, email), events by customer. A join or
    # an EXISTS over the flow's events lets PostgreSQL read the whole event table instead.
    queued = OptOutWriteBack.objects.filter(
        flow=flow, email=OuterRef("email"), opted_out_at=OuterRef("date_removed")
    )
    candidates = list(
        Suppression.objects.filter(destination_id=flow.destination_id).exclude(Exists(queued))
    )
    known: set[str] = set()
    emails = sorted({c.email for c in candidates})
    for start in range(0, len(emails), 1000):
        customers = dict(
            Customer.objects.filter(
                workspace_id=flow.workspace_id, email__in=emails[start : start + 1000]
            ).values_list("pk", "email")
        )
        known.update(
            customers[pk]
            for pk in SourceEvent.objects.filter(customer_id__in=list(customers), flow_id=flow.pk)
            .values_list("customer_id", flat=True)
            .distinct()
        )
    suppressions = [c for c in candidates if c.email in known]
    rows = [
        OptOutWriteBack(
            workspace_id=flow.workspace_id,
            flow=flow,
            source_id=flow.source_id,
            suppression=s,
            email=s.email,
            reason=s.reason,
            opted_out_at=s.date_removed,
        )
        for s in suppressions
    ]
    before = OptOutWriteBack.objects.filter(flow=flow).count()
    OptOutWriteBack.objects.bulk_create(rows, ignore_conflicts=True)
    return OptOutWriteBack.objects.filter(flow=flow).count() - before


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 6 * 3600))


def write_back_due(flow: Flow, now: datetime | None = None) -> int:
    """Tell the source about each due opt-out; returns how many were written."""
    now = now or timezone.now()
    adapter = get_adapter(flow.source.kind)
    written = 0
    due = OptOutWriteBack.objects.filter(
        flow=flow, state=OptOutWriteBack.State.PENDING, next_attempt_at__lte=now
    ).order_by("opted_out_at")[:WRITE_BACK_BATCH]
    for row in due:
        try:
            via = tell_source(flow, adapter, row)
        except SourceError as exc:
            _write_back_failed(flow, row, exc, now)
            continue
        OptOutWriteBack.objects.filter(pk=row.pk).update(
            state=OptOutWriteBack.State.WRITTEN,
            via=via,
            written_at=timezone.now(),
            attempts=row.attempts + 1,
            error="",
        )
        clear_occurrences(flow.workspace, [row.event_key])
        written += 1
    return written


def writes_opt_outs(adapter: SourceAdapter | None) -> bool:
    """Whether this source's connector can record an opt-out itself."""
    return adapter is not None and (
        type(adapter).write_back_opt_out is not SourceAdapter.write_back_opt_out
    )


def tell_source(flow: Flow, adapter: SourceAdapter | None, row: OptOutWriteBack) -> str:
    """Record one opt-out in the source: through its connector where it can, else POSTed to the
    flow's opt-out webhook. Returns how (`OptOutWriteBack.Via`); raises SourceError."""
    if adapter is not None and writes_opt_outs(adapter):
        adapter.write_back_opt_out(flow.source, row.email, row.opted_out_at)
        return OptOutWriteBack.Via.CONNECTOR
    url = FlowWatch.for_flow(flow).opt_out_webhook_url
    if not url:
        raise SourceError(
            f"{flow.source.name} has no way to record opt-outs through its connector and the "
            "flow has no opt-out webhook: an admin can set one on the Opt-outs page.",
            permanent=True,
        )
    post_opt_out(url, opt_out_body(flow, row))
    return OptOutWriteBack.Via.WEBHOOK


OPT_OUT_TIMEOUT = 10.0


def opt_out_body(flow: Flow, row: OptOutWriteBack) -> dict[str, Any]:
    """The outbound webhook's JSON: a consent change in the canonical event's words, with a key
    the receiver can deduplicate on (the same opt-out always carries the same key)."""
    at = row.opted_out_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "event_type": "consent.changed",
        "channel": "email",
        "status": "unsubscribed",
        "email": row.email,
        "reason": row.reason,
        "opted_out_at": at,
        "origin": "dotdigital",
        "flow": flow.name,
        "source": flow.source.name,
        "idempotency_key": hashlib.sha256(
            f"{flow.source_id}|{row.email}|{at}".encode()
        ).hexdigest(),
    }


def post_opt_out(url: str, body: dict[str, Any]) -> None:
    """POST one opt-out; 2xx is written. 4xx other than 408/429 is permanent (a wrong URL will
    not mend by retrying); timeouts, dropped connections, 408, 429 and 5xx are transient."""
    where = urlsplit(url)
    shown = f"{where.scheme}://{where.netloc}{where.path}"  # never a token in the query
    try:
        response = requests.post(
            url,
            json=body,
            headers={"Idempotency-Key": str(body["idempotency_key"])},
            timeout=OPT_OUT_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise SourceError(f"Opt-out webhook {shown}: {type(exc).__name__}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    raise SourceError(
        f"Opt-out webhook {shown} answered {status}: {response.text[:200]}",
        permanent=400 <= status < 500 and status not in (408, 429),
    )


def _write_back_failed(flow: Flow, row: OptOutWriteBack, exc: SourceError, now: datetime) -> None:
    attempts = row.attempts + 1
    permanent = bool(getattr(exc, "permanent", False))
    # A transient failure retries with backoff; it becomes an exception when it is permanent or
    # has failed five times (an opt-out not reaching the source is a compliance problem).
    fields: dict[str, Any] = {"attempts": attempts, "error": str(exc)[:2000]}
    if permanent or attempts >= 5:
        fields["state"] = OptOutWriteBack.State.FAILED
    else:
        fields["next_attempt_at"] = now + backoff(attempts)
    OptOutWriteBack.objects.filter(pk=row.pk).update(**fields)
    if "state" in fields:
        record_occurrence(
            workspace=flow.workspace,
            kind="consent_sync_failed",
            event_key=row.event_key,
            stage="write_back",
            message=f"The opt-out of {row.email} ({row.opted_out_at:%Y-%m-%d %H:%M} UTC) could not "
            f"be written to {flow.source.name}: {exc}",
            flow_key=flow.key,
            flow_label=flow.name,
            subject_key=f"optout:{flow.source_id}",
            subject_label=f"Opt-outs to {flow.source.name}",
            email=row.email,
            detail={"write_back": row.pk, "attempts": attempts},
        )


def retry_write_backs(occurrences: Sequence[Occurrence]) -> None:
    """The inbox's retry for `consent_sync_failed` raised here: due again, now."""
    ids = [
        int(o.event_key.split(":", 1)[1])
        for o in occurrences
        if o.event_key.startswith("optout:") and o.event_key.split(":", 1)[1].isdigit()
    ]
    OptOutWriteBack.objects.filter(pk__in=ids).exclude(state=OptOutWriteBack.State.WRITTEN).update(
        state=OptOutWriteBack.State.PENDING, next_attempt_at=timezone.now()
    )
    for flow in Flow.objects.filter(opt_out_writes__pk__in=ids).distinct():
        write_back_due(flow)


@dataclass
class OptOutRoute:
    flow: Flow
    way: str  # "connector", "webhook" or "" (none: every opt-out fails until one is set)


def opt_out_routes(workspace_id: int) -> list[OptOutRoute]:
    """How each flow's opt-outs reach its source."""
    routes = []
    for flow in Flow.objects.filter(workspace_id=workspace_id).select_related("source"):
        way: str
        if writes_opt_outs(get_adapter(flow.source.kind)):
            way = OptOutWriteBack.Via.CONNECTOR
        else:
            way = (
                OptOutWriteBack.Via.WEBHOOK if FlowWatch.for_flow(flow).opt_out_webhook_url else ""
            )
        routes.append(OptOutRoute(flow, way))
    return routes


def set_opt_out_webhook(flow: Flow, url: str, actor: User | None) -> None:
    """Set (or, with "", remove) the flow's opt-out webhook, with an audit row (value hidden)."""
    watch = FlowWatch.for_flow(flow)
    before = audit.snapshot(watch, ["opt_out_webhook_url"], secret_fields=["opt_out_webhook_url"])
    watch.opt_out_webhook_url = url
    watch.save(update_fields=["opt_out_webhook_url"])
    audit.record_change(
        flow.workspace,
        actor,
        watch,
        ConfigChange.Action.CHANGED,
        before,
        audit.snapshot(watch, ["opt_out_webhook_url"], secret_fields=["opt_out_webhook_url"]),
        secret_fields=["opt_out_webhook_url"],
        always=True,
    )


def opt_outs_of(workspace_id: int, query: str) -> list[OptOutWriteBack]:
    """One contact's opt-outs and how each reached the source (for the timeline by email)."""
    if "@" not in query:
        return []
    return list(
        OptOutWriteBack.objects.filter(workspace_id=workspace_id, email=query.strip().lower())
        .select_related("flow", "source")
        .order_by("-opted_out_at")[:20]
    )


def write_opt_outs_csv(out: Any, rows: Iterable[OptOutWriteBack]) -> None:
    """The opt-outs as CSV: the export for a source told by hand."""
    writer = csv.writer(out)
    writer.writerow(
        ["email", "reason", "opted_out_at", "source", "flow", "state", "via", "written_at"]
    )
    for row in rows:
        writer.writerow(
            [
                row.email,
                row.reason,
                row.opted_out_at.astimezone(UTC).isoformat(),
                row.source.name,
                row.flow.name,
                row.state,
                row.via,
                row.written_at.astimezone(UTC).isoformat() if row.written_at else "",
            ]
        )


def round_trip(flow: Flow) -> tuple[int, int]:
    """Queue the new opt-outs and write the due ones: (queued, written)."""
    return queue_write_backs(flow), write_back_due(flow)


def opt_out_prerequisite(group: ExceptionGroup) -> Prerequisite | None:
    """consent_sync_failed: while the flow's source has no way to take an opt-out (its connector
    cannot record one and the flow has no opt-out webhook), every retry fails the same way."""
    flow = flow_of(group)
    if flow is None or writes_opt_outs(get_adapter(flow.source.kind)):
        return None
    if FlowWatch.objects.filter(flow=flow).exclude(opt_out_webhook_url="").exists():
        return None
    return Prerequisite(
        fix=f"set an opt-out webhook for {flow.name} ({flow.source.name}'s connector cannot "
        "record opt-outs)",
        url=reverse("watch:opt-outs", kwargs={"ws": flow.workspace.slug}) + f"#flow-{flow.pk}",
        link_text=f"{flow.name}: opt-out settings",
        who="only an admin",
    )


def register_hooks() -> None:
    register(KIND, retry=repair_occurrences)
    register("consent_sync_failed", prerequisite=opt_out_prerequisite)
    # consent_sync_failed may also be raised by the delivery side: only take retry if unclaimed.
    if hooks_of("consent_sync_failed").get("retry") is None:
        register("consent_sync_failed", retry=retry_write_backs)
