"""Step 5, confirm: what DotDigital said about each operation, and what that makes of each event.

An operation is *delivered* when a single call answered 2xx, or when its import is Finished and
its record is not among the import's failures. Per-record failures go back to their operations:
transient ones (the contact is still being written) retry with backoff; suppressed contacts are
skipped with that reason; the rest fail with DotDigital's code and text, opening an exception for
each of their events. An event is delivered when all its operations are.

Latency: `delivered_at − occurred_at`, split into source delay (`received_at − occurred_at`),
queue time (`sent_at − received_at`) and DotDigital time (`delivered_at − sent_at`), where
`sent_at` is when the last write the event waited on was sent.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Case, F, Max, Min, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from accounts.models import Workspace
from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.types import FailureKind, ImportHandle, ImportKind, ImportState
from exceptions_inbox.kinds import register_hooks as register
from exceptions_inbox.recording import clear_occurrences, record_occurrence, skipped_reason
from monitoring.models import (
    Customer,
    DeliveryBatch,
    DestinationCache,
    ListMembership,
    Operation,
    OperationEvent,
    SourceEvent,
)
from monitoring.pipeline.claims import claim_ids, worker_token, working
from monitoring.pipeline.destination import pause_destination
from monitoring.pipeline.hooks import event_ids, render_event, skip_events
from monitoring.pipeline.lane_rules import REALTIME
from monitoring.pipeline.normalise import parse_time
from monitoring.pipeline.rows import bulk_set
from monitoring.pipeline.sending import Result
from monitoring.pipeline.wake import wake_delivery

log = logging.getLogger(__name__)

STAGE = "deliver"
# A transient failure (429, 5xx, timeout, dropped connection, the contact still being written)
# is retried while its events are within their flow's lag threshold (design.md, "Errors: whose
# problem is it"); once it outlasts that, and has failed at least this many times, it fails
# into the inbox. An operation without open events is measured from its creation.
MIN_ATTEMPTS = 3
DEFAULT_LAG_THRESHOLD = 15 * 60
POLL_LEASE_SECONDS = 60
KINDS = ("dotdigital_rejected", "schema_mismatch")
Op = Operation.State


# A transient error's backoff grows to a minute at most: a fault that lasts longer (a restart, a
# storm) must not leave writes parked for a quarter of an hour once DotDigital answers again,
# and the first write that gets through makes the rest due at once (`deliver.resume_backed_off`).
MAX_BACKOFF = 60.0


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds to wait: what DotDigital said, else exponential with full jitter (≤ a minute)."""
    if retry_after is not None:
        return retry_after + random.uniform(0, min(5.0, retry_after * 0.2 + 0.1))
    # A first retry within a second: one 503 among a dispatch's calls must not cost it seconds.
    return random.uniform(0.2, min(MAX_BACKOFF, 0.5 * 2 ** min(attempts, 12)))


def record_results(results: Sequence[Result], *, owner: str | None = None) -> set[int]:
    """Write the outcomes (one transaction) and settle the events they finish. `owner`: only
    operations still leased to this worker are touched (a claim that outlived its lease loses).
    Returns the ids of the events settled."""
    if not results:
        return set()
    now = timezone.now()
    by: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        by[result.outcome].append(result)
    with transaction.atomic():
        ops = Operation.objects.filter(pk__in=[r.op_id for r in results])
        if owner is not None:
            ops = ops.filter(Q(lease_owner=owner) | Q(state=Op.SENT))
        # In pk order, as planning locks them: two lanes never wait on each other in a cycle.
        mine = {op.pk: op for op in ops.select_for_update().defer("payload").order_by("pk")}
        touched: set[int] = set()
        delivered = [r for r in by["delivered"] if r.op_id in mine]
        if delivered:
            touched.update(_record_delivered(delivered, mine, now))
        _record_sent(by["sent"], mine)
        # A retry that outlasted its flow's lag threshold fails instead.
        by["failed"].extend(_record_retries(by["retry"], mine, now))
        touched |= _record_ends(by, mine, now)
        events = set(
            OperationEvent.objects.filter(operation_id__in=touched).values_list(
                "event_id", flat=True
            )
        )
        settled = settle_events(events, now, failures=by["failed"])
    # Two claims that finish an event's last operations at once each see the other's outcome
    # still open (neither has committed), and neither would settle the event: look again once
    # this commits.
    unsettled = events - settled
    if unsettled:
        transaction.on_commit(partial(settle_after_commit, unsettled, list(by["failed"])))
    return settled


def settle_after_commit(event_ids: set[int], failures: Sequence[Result]) -> set[int]:
    """Settle what a commit may have left open, holding the events' rows (in pk order) so two
    such looks never settle one event twice. No operation is locked here: confirmation and
    planning lock operations before events, never the other way round. Most such events still
    wait on other operations: one read finds them, and only the rest are locked."""
    still_open = set(
        OperationEvent.objects.filter(event_id__in=event_ids, outcome="").values_list(
            "event_id", flat=True
        )
    )
    done = set(event_ids) - still_open
    if not done:
        return set()
    with transaction.atomic():
        ready = list(
            SourceEvent.objects.select_for_update()
            .filter(pk__in=done, state=SourceEvent.State.READY)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        return settle_events(ready, failures=failures) if ready else set()


def _record_delivered(
    delivered: list[Result], mine: dict[int, Operation], now: datetime
) -> list[int]:
    ids = [r.op_id for r in delivered]
    OperationEvent.objects.filter(
        operation_id__in=ids, outcome="", version__lte=F("operation__sent_version")
    ).update(outcome=OperationEvent.Outcome.DELIVERED)
    Operation.objects.filter(pk__in=ids, version=F("sent_version")).update(
        state=Op.DELIVERED,
        delivered_at=now,
        lease_owner="",
        lease_until=None,
        via=Case(When(batch__isnull=False, then=Value("import")), default=Value("single")),
    )
    # Newer state arrived while it was in flight: send again, straight away.
    Operation.objects.filter(pk__in=ids).exclude(version=F("sent_version")).update(
        state=Op.PENDING,
        next_attempt_at=now,
        attempts=0,
        lease_owner="",
        lease_until=None,
        batch=None,
    )
    # A realtime write that waited for a bulk import of its record (a refund's contact in a
    # nightly import) is due now; its lane's runner may have let go while nothing was due, and
    # the sweeper would find it only seconds later.
    for destination_id in sorted(
        {
            mine[i].destination_id
            for i in ids
            if mine[i].lane == REALTIME and mine[i].version != mine[i].sent_version
        }
    ):
        wake_delivery(destination_id, REALTIME)
    _after_delivery([mine[i] for i in ids], delivered)
    return ids


def _record_sent(sent: list[Result], mine: dict[int, Operation]) -> None:
    in_batch: dict[int | None, list[int]] = defaultdict(list)
    for result in sent:
        if result.op_id in mine:
            in_batch[result.batch_id].append(result.op_id)
    for batch_id, op_ids in in_batch.items():  # one UPDATE per import
        Operation.objects.filter(pk__in=op_ids).update(
            state=Op.SENT, batch_id=batch_id, lease_owner="", lease_until=None
        )


def _record_retries(
    retries: list[Result], mine: dict[int, Operation], now: datetime
) -> list[Result]:
    """Back to pending with backoff; returns the failures of those past their lag threshold."""
    failed: list[Result] = []
    retried: list[Operation] = []
    lagging = outlasting_lag(
        [
            mine[r.op_id]
            for r in retries
            if r.op_id in mine and mine[r.op_id].attempts >= MIN_ATTEMPTS
        ],
        now,
    )
    for result in retries:
        op = mine.get(result.op_id)
        if op is None:
            continue
        if op.pk in lagging:
            failed.append(
                Result(
                    op.pk,
                    "failed",
                    reason=(
                        f"Still failing after {op.attempts} attempts, beyond the flow's lag "
                        f"threshold: {result.reason}"
                    ),
                    code=result.code,
                    text=result.text,
                )
            )
            continue
        op.state = Op.PENDING
        op.next_attempt_at = now + timedelta(seconds=backoff(op.attempts, result.retry_after))
        op.lease_owner, op.lease_until, op.batch_id = "", None, None
        op.error_code = result.code[:120]
        # Why it waits, in words (the retry's reason); DotDigital's own text when there is none.
        op.error_text = (result.reason or result.text)[:2000]
        retried.append(op)
    bulk_set(
        retried,
        [
            "state",
            "next_attempt_at",
            "lease_owner",
            "lease_until",
            "batch",
            "error_code",
            "error_text",
        ],
    )
    return failed


def _record_ends(
    by: dict[str, list[Result]], mine: dict[int, Operation], now: datetime
) -> set[int]:
    """Skipped and failed operations end, with the writes that needed their contact."""
    touched: set[int] = set()
    for outcome, link in (
        ("skipped", OperationEvent.Outcome.SKIPPED),
        ("failed", OperationEvent.Outcome.FAILED),
    ):
        for result in by[outcome]:
            if result.op_id not in mine:
                continue
            Operation.objects.filter(pk=result.op_id).update(
                state=Op.SKIPPED if outcome == "skipped" else Op.FAILED,
                delivered_at=now,
                lease_owner="",
                lease_until=None,
                reason=result.reason[:2000],
                error_code=result.code[:120],
                error_text=result.text[:2000],
            )
            OperationEvent.objects.filter(operation_id=result.op_id, outcome="").update(
                outcome=link, reason=_describe(result)[:2000]
            )
            touched.add(result.op_id)
            op = mine[result.op_id]
            if op.kind == Operation.Kind.CONTACT and (
                outcome == "failed" or result.code == "suppressed"
            ):
                touched |= _settle_dependants(op, result, link, now)
    return touched


def outlasting_lag(ops: Sequence[Operation], now: datetime) -> set[int]:
    """Of these operations, those whose oldest open event has waited longer than its flow's lag
    threshold (the lowest, when events of several flows share the operation)."""
    if not ops:
        return set()
    rows = (
        OperationEvent.objects.filter(operation_id__in=[op.pk for op in ops], outcome="")
        .values("operation_id")
        .annotate(
            oldest=Min("event__received_at"), threshold=Min("event__flow__lag_threshold_seconds")
        )
    )
    waited = {r["operation_id"]: (r["oldest"], r["threshold"]) for r in rows}
    out = set()
    for op in ops:
        oldest, threshold = waited.get(op.pk, (None, None))
        since = oldest or op.created_at
        if (now - since).total_seconds() > (threshold or DEFAULT_LAG_THRESHOLD):
            out.add(op.pk)
    return out


def _describe(result: Result) -> str:
    if result.text:
        return f"DotDigital {result.code}: {result.text}".strip()
    return result.reason or result.code


def _settle_dependants(op: Operation, result: Result, link: str, now: datetime) -> set[int]:
    """A suppressed or rejected contact: its pending insight and list writes (which need the
    contact to exist) end the same way, with the same reason."""
    if not op.contact_key:
        return set()
    qs = Operation.objects.filter(
        destination_id=op.destination_id,
        contact_key=op.contact_key,
        state=Op.PENDING,
        kind__in=("insight", "list_add", "list_remove"),
    )
    ids = set(qs.values_list("pk", flat=True))
    if ids:
        reason = (
            result.reason
            if link == OperationEvent.Outcome.SKIPPED
            else f"Its contact was rejected: {_describe(result)}"
        )
        Operation.objects.filter(pk__in=ids).update(
            state=Op.SKIPPED if link == OperationEvent.Outcome.SKIPPED else Op.FAILED,
            delivered_at=now,
            reason=reason[:2000],
            error_code=result.code[:120],
            error_text=result.text[:2000],
        )
        OperationEvent.objects.filter(operation_id__in=ids, outcome="").update(
            outcome=link, reason=reason[:2000]
        )
    return ids


def remember_contact_ids(customers: dict[int, int]) -> None:
    """DotDigital's contact ids on the identity map, in a short transaction of their own (after
    the outcomes committed) so it never holds customer rows that staging is updating. Only a
    cache: on a clash it is left for the next delivery to fill in."""
    if not customers:
        return
    try:
        with transaction.atomic():
            rows = list(
                Customer.objects.filter(pk__in=customers)
                .exclude(dotdigital_contact_id__gt="")
                .order_by("pk")
                .select_for_update(skip_locked=True)
            )
            for customer in rows:
                customer.dotdigital_contact_id = str(customers[customer.pk])
            bulk_set(rows, ["dotdigital_contact_id"])
    except DatabaseError as exc:
        log.info("contact ids not remembered this time: %s", exc)


def _after_delivery(ops: list[Operation], results: list[Result]) -> None:
    """Remember DotDigital's contact ids (after commit) and the list memberships in place."""
    ids = {r.op_id: r.contact_id for r in results if r.contact_id}
    customers = {op.customer_id: int(ids[op.pk]) for op in ops if op.pk in ids and op.customer_id}
    if customers:
        transaction.on_commit(partial(remember_contact_ids, customers))
    memberships = []
    lists = [o.pk for o in ops if o.kind in ("list_add", "list_remove")]
    payloads = dict(Operation.objects.filter(pk__in=lists).values_list("pk", "payload"))
    for op in ops:
        if op.kind not in ("list_add", "list_remove") or op.version != op.sent_version:
            continue
        payload = payloads.get(op.pk) or {}
        memberships.append(
            ListMembership(
                workspace_id=op.workspace_id,
                destination_id=op.destination_id,
                list_name=str(payload.get("list")),
                email=op.record_key,
                customer_id=op.customer_id,
                member=op.kind == "list_add",
                expires_at=parse_time(payload.get("expires_at")),
            )
        )
    if memberships:
        ListMembership.objects.bulk_create(
            memberships,
            update_conflicts=True,
            unique_fields=["destination", "list_name", "email"],
            update_fields=["member", "expires_at", "customer"],
        )


def settle_events(
    event_ids: Iterable[int], now: datetime | None = None, *, failures: Sequence[Result] = ()
) -> set[int]:
    """Events whose every operation has an outcome end delivered, skipped or failed (with an
    inbox occurrence carrying DotDigital's code and text). Returns the settled ids."""
    ids = set(event_ids)
    if not ids:
        return set()
    now = now or timezone.now()
    still_open = set(
        OperationEvent.objects.filter(event_id__in=ids, outcome="").values_list(
            "event_id", flat=True
        )
    )
    done = ids - still_open
    if not done:
        return set()
    outcomes: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for event_id, outcome, reason, kind in OperationEvent.objects.filter(
        event_id__in=done
    ).values_list("event_id", "outcome", "reason", "operation__error_code"):
        outcomes[event_id].append((outcome, reason, kind))
    kinds = {r.op_id: r.kind for r in failures}
    failed_kind: dict[int, str] = {}
    if failures:
        for event_id, op_id in OperationEvent.objects.filter(
            event_id__in=done, operation_id__in=list(kinds), outcome="failed"
        ).values_list("event_id", "operation_id"):
            failed_kind.setdefault(event_id, kinds[op_id])
    delivered, skipped, failed = [], defaultdict(list), {}
    for event_id, rows in outcomes.items():
        if any(o == "failed" for o, _, _ in rows):
            failed[event_id] = "; ".join(r for o, r, _ in rows if o == "failed")
        elif all(o == "skipped" for o, _, _ in rows):
            skipped[rows[0][1] or "Skipped by DotDigital."].append(event_id)
        else:
            delivered.append(event_id)
    last_sent = Subquery(
        OperationEvent.objects.filter(event_id=OuterRef("pk"))
        .values("event_id")
        .annotate(at=Max("operation__sent_at"))
        .values("at")[:1]
    )
    base = SourceEvent.objects.filter(state=SourceEvent.State.READY)
    if delivered:
        retried = list(
            base.filter(pk__in=delivered).exclude(failed_kind="").values_list("workspace_id", "pk")
        )
        base.filter(pk__in=delivered).update(
            state=SourceEvent.State.DELIVERED,
            delivered_at=now,
            sent_at=last_sent,
            lease_owner="",
            lease_until=None,
            failed_kind="",
            reason="",
        )
        by_workspace: dict[int, list[str]] = defaultdict(list)
        for workspace_id, pk in retried:
            by_workspace[workspace_id].append(f"event:{pk}")
        for workspace_id, keys in by_workspace.items():
            clear_occurrences(Workspace(pk=workspace_id), keys, stage=STAGE)
    for reason, event_ids_ in skipped.items():
        base.filter(pk__in=event_ids_).update(
            state=SourceEvent.State.SKIPPED,
            delivered_at=now,
            sent_at=last_sent,
            lease_owner="",
            lease_until=None,
            reason=reason[:2000],
        )
    if failed:
        for event in base.filter(pk__in=list(failed)).select_related("flow", "workspace"):
            kind = failed_kind.get(event.pk, "dotdigital_rejected")
            _fail_event(event, kind, failed[event.pk])
    return set(delivered) | {e for v in skipped.values() for e in v} | set(failed)


def _fail_event(event: SourceEvent, kind: str, message: str) -> None:
    flow = event.flow
    code = message.split(":", 1)[0].removeprefix("DotDigital ").strip() or kind
    SourceEvent.objects.filter(pk=event.pk).update(
        state=SourceEvent.State.FAILED,
        failed_kind=kind,
        reason=message[:2000],
        lease_owner="",
        lease_until=None,
    )
    customer = event.customer
    occurrence = record_occurrence(
        workspace=event.workspace,
        kind=kind,
        event_key=event.key,
        stage=STAGE,
        message=message[:2000],
        flow_key=flow.key if flow else "",
        flow_label=flow.name if flow else "",
        subject_key=f"dotdigital:{code}",
        subject_label=code,
        detail={"event_id": event.pk, "event_type": event.event_type},
        source_event_id=event.source_event_id,
        order_number=event.order_ref,
        email=customer.email if customer else "",
    )
    if occurrence.state == "skipped":  # the person who ignored or resolved the group decided
        SourceEvent.objects.filter(pk=event.pk).update(
            state=SourceEvent.State.SKIPPED, reason=skipped_reason(occurrence.group.state, kind)
        )


# -- polling imports ------------------------------------------------------------------------------


# Our share of the status tier (DotDigital's 1,200 a minute is 20/s), which only import polls use.
POLLS_PER_SECOND = 16.0
EARLY_POLL = 0.2  # seconds between an import's first polls, after its first (`first_poll_after`)


def poll_interval(polls: int, in_flight: int = 1) -> float:
    """Sub-second at first (an import's first poll comes a little before its kind's last imports
    were seen finished: `sending.first_poll_after`), backing off to 5 s, and spread so all imports in flight together stay within
    `POLLS_PER_SECOND` (a departure from DotDigital's "every 5–30 s": docs/architecture.md,
    "Engine: delivery")."""
    spread = in_flight / POLLS_PER_SECOND
    if polls < 6:
        return max(EARLY_POLL, spread)
    return max(spread, min(5.0, EARLY_POLL * 2.0 ** (polls - 5)))


def lane_imports(destination_id: int, lane: str) -> Any:
    """The imports in flight that this lane polls: its own, and the bulk imports a realtime write
    waits for (`DeliveryBatch.awaited`) are the realtime lane's alone (a bulk poller would hold
    one's lease while its client waits for the bulk lane's share of the status calls)."""
    mine = Q(lane=lane) | Q(awaited=True) if lane == REALTIME else Q(lane=lane, awaited=False)
    return DeliveryBatch.objects.filter(
        mine, destination_id=destination_id, state=DeliveryBatch.State.SUBMITTED
    )


def due_batches(destination_id: int, lane: str, now: datetime) -> Any:
    return lane_imports(destination_id, lane).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now), next_attempt_at__lte=now
    )


def claim_batches(destination_id: int, lane: str, owner: str, limit: int = 25) -> list[int]:
    return claim_ids(
        due_batches(destination_id, lane, timezone.now()).order_by("next_attempt_at"),
        limit=limit,
        owner=owner,
        lease_seconds=POLL_LEASE_SECONDS,
    )


def run_confirmation(client: DotDigitalClient, destination_id: int, lane: str) -> int:
    """Poll this lane's due imports once; returns how many finished."""
    owner = worker_token()
    with working(owner):
        return _confirm(client, destination_id, lane, owner)


def _confirm(client: DotDigitalClient, destination_id: int, lane: str, owner: str) -> int:
    ids = claim_batches(destination_id, lane, owner)
    finished = 0
    for batch in DeliveryBatch.objects.filter(pk__in=ids, lease_owner=owner):
        handle = ImportHandle(batch.import_id, ImportKind(batch.kind), (), batch.collection or None)
        try:
            status = client.poll_import(handle)
        except errors.NotFound:
            _lost(batch, "DotDigital does not know this import any more.")
            continue
        except errors.ConnectionProblem as exc:
            _release_batch(batch, 5.0)
            pause_destination(destination_id, exc)
            return finished
        except errors.RetryableError as exc:
            _release_batch(batch, exc.retry_after or poll_interval(batch.polls))
            continue
        if status.state is ImportState.PENDING:
            in_flight = DeliveryBatch.objects.filter(
                destination_id=destination_id, state=DeliveryBatch.State.SUBMITTED
            ).count()
            # An awaited import is polled at the first polls' pace, however long it has taken.
            polls = 1 if batch.awaited else batch.polls + 1
            _release_batch(batch, poll_interval(polls, in_flight), raw=status.raw_status)
            continue
        finished += 1
        finish_batch(batch, status)
    return finished


def _release_batch(batch: DeliveryBatch, wait: float, raw: str = "") -> None:
    DeliveryBatch.objects.filter(pk=batch.pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=wait),
        polls=F("polls") + 1,
        lease_owner="",
        lease_until=None,
        **({"raw_status": raw[:40]} if raw else {}),
    )


def _lost(batch: DeliveryBatch, reason: str) -> None:
    ops = list(Operation.objects.filter(batch=batch, state=Op.SENT).values_list("pk", flat=True))
    DeliveryBatch.objects.filter(pk=batch.pk).update(
        state=DeliveryBatch.State.FAILED, finished_at=timezone.now(), lease_owner=""
    )
    record_results([Result(pk, "retry", reason=reason) for pk in ops])


FINISH_SLICE = 250  # an import's outcomes recorded a transaction at a time


def finish_batch(batch: DeliveryBatch, status: Any) -> None:
    """A finished (or failed) import: each of its operations delivered, retried, skipped or
    failed by its record's fate."""
    ops = list(Operation.objects.filter(batch=batch, state=Op.SENT))
    results = []
    if status.state is ImportState.FAILED:
        results = [
            Result(op.pk, "retry", reason=f"The import ended {status.raw_status}.") for op in ops
        ]
    else:
        for op in ops:
            failure = status.failures.get(op.record_key)
            if failure is None:
                results.append(
                    Result(op.pk, "delivered", contact_id=status.contact_ids.get(op.record_key))
                )
            elif failure.kind is FailureKind.TRANSIENT:
                results.append(
                    Result(
                        op.pk, "retry", reason=failure.text, code=failure.code, text=failure.text
                    )
                )
            elif failure.kind is FailureKind.SUPPRESSED:
                results.append(
                    Result(
                        op.pk,
                        "skipped",
                        reason=f"The contact is {failure.code} in DotDigital.",
                        code="suppressed",
                    )
                )
            else:
                results.append(
                    Result(
                        op.pk,
                        "failed",
                        reason=failure.text,
                        code=failure.code,
                        text=failure.text,
                        kind="schema_mismatch"
                        if "schema" in failure.code.lower()
                        or failure.code.lower() == "inconsistenttypes"
                        else "dotdigital_rejected",
                    )
                )
    # In slices, each its own transaction, the batch's end with the last: a slice's operations and
    # events are locked for a moment, not while thousands are recorded (planning a newer write of
    # one of them, in either lane, waited for the whole import's recording). A poller that dies
    # between slices leaves the batch submitted; the next finishes the operations still sent.
    results.sort(key=lambda r: r.op_id)
    *slices, last = [
        results[i : i + FINISH_SLICE] for i in range(0, len(results), FINISH_SLICE)
    ] or [[]]
    for piece in slices:
        with transaction.atomic():
            record_results(piece)
    with transaction.atomic():
        DeliveryBatch.objects.filter(pk=batch.pk).update(
            state=DeliveryBatch.State.FAILED
            if status.state is ImportState.FAILED
            else DeliveryBatch.State.FINISHED,
            raw_status=status.raw_status[:40],
            summary=status.summary,
            failures=len(status.failures),
            finished_at=timezone.now(),
            polls=F("polls") + 1,
            lease_owner="",
            lease_until=None,
        )
        record_results(last)


# -- the inbox's hooks for delivery's kinds -------------------------------------------------------


def retry_delivery(occurrences: Sequence[Any]) -> None:
    """Re-plan the blocked events from today's state and mappings; their occurrences clear when
    they are delivered (`settle_events`)."""
    ids = event_ids(occurrences)
    if not ids:
        return
    qs = SourceEvent.objects.filter(pk__in=ids, state=SourceEvent.State.FAILED)
    destinations = set(qs.values_list("flow__destination_id", flat=True))
    lanes = set(qs.values_list("lane", flat=True))
    qs.update(
        state=SourceEvent.State.READY, lease_owner="", lease_until=None, reason="", in_outbox=False
    )
    # Today's DotDigital too: its data field types and collection schemas are read again.
    DestinationCache.objects.filter(destination_id__in=destinations).exclude(
        name__in=("suppressions_cursor", "lists")
    ).delete()
    for destination_id in destinations:
        for lane in lanes:
            if destination_id is not None:
                wake_delivery(destination_id, lane)


def register_hooks() -> None:
    """Called from MonitoringConfig.ready()."""
    for kind in KINDS:
        register(
            kind,
            retry=retry_delivery,
            on_resolve=skip_events,
            on_ignore=skip_events,
            render_occurrence=render_event,
        )
