"""Step 2, stage: claimed events, per entity key in source-version order, become the workspace's
merged state (identities, orders, shipments, refunds, products, stock), held, skipped, or failed
with an inbox occurrence. A staged event waits as READY ("ready to deliver") for planning, which
builds its operations from `event.order` / `event.customer` and the state without staging again.

Where each event type is staged: `HANDLERS`, below.

Each batch is one transaction: a fast path first (the state the batch names read up front, no
savepoint per event, new rows inserted together at the end on PostgreSQL), and when an event would
need its writes undone, the whole batch again on the safe path (a savepoint per event). Aggregates
are recomputed once per batch for the customers it touched (`recompute_aggregates`), never
incremented.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Workspace
from exceptions_inbox.recording import clear_occurrences, record_occurrence, skipped_reason
from monitoring.models import Flow, SourceEvent
from monitoring.pipeline.claims import claim_ids, worker_token, working
from monitoring.pipeline.lane_rules import BULK, REALTIME, intake_lane
from monitoring.pipeline.normalise import is_credit_document
from monitoring.pipeline.rows import bulk_set
from monitoring.pipeline.staging.aggregates import recompute_aggregates
from monitoring.pipeline.staging.batch import (
    BATCH_SIZE,
    LEASE_SECONDS,
    STAGE,
    Abort,
    Batch,
    Failure,
    Hold,
    Outcome,
    State,
    failed_outcome,
    read_state,
)
from monitoring.pipeline.staging.catalogue import stage_product, stage_stock
from monitoring.pipeline.staging.customers import stage_consent, stage_customer
from monitoring.pipeline.staging.orders import stage_order, stage_status
from monitoring.pipeline.staging.refunds import stage_credit_note, stage_refund, stage_return
from monitoring.pipeline.staging.shipments import stage_dispatch, stage_scan, stage_tracking
from monitoring.pipeline.wake import wake_staging_pairs

log = logging.getLogger(__name__)


def stage_order_document(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    """An order, or a credit note or return the source sends as an order document
    (`data.document_type`), staged as a refund against the order it names."""
    if is_credit_document(event.data):
        stage_credit_note(event, flow, batch)
    else:
        stage_order(event, flow, batch)


# Where each event type is staged.
HANDLERS = {
    "customer.upserted": stage_customer,
    "consent.changed": stage_consent,
    "order.created": stage_order_document,
    "order.updated": stage_order_document,
    "order.status_changed": stage_status,
    "shipment.dispatched": stage_dispatch,
    "shipment.tracking_updated": stage_tracking,
    "shipment.carrier_scanned": stage_scan,
    "refund.issued": stage_refund,
    "return.received": stage_return,
    "product.updated": stage_product,
    "stock.changed": stage_stock,
}


def run_staging(
    *,
    flow_id: int | None = None,
    lane: str | None = None,
    batch_size: int = BATCH_SIZE,
    time_budget: float | None = None,
    then: Callable[[list[int], str], object] | None = None,
) -> int:
    """Stage due events (of one flow, or all; of one lane, or both) until none is due or the time
    budget is spent. Returns how many were staged. Safe to run on any number of workers at once:
    each batch locks the state it reads, and the state keeps the latest source version whatever
    order two batches commit in. `then(ids, owner)`, if given, is called after each batch
    commits, while its claim's owner is still at work: the batch's READY events are still leased
    to it, so planning them takes no second claim (`lanes.stage_flow`)."""
    started = time.monotonic()
    total = 0
    while True:
        owner = worker_token()
        with working(owner):
            ids = claim_due(flow_id, lane, owner, batch_size)
            if not ids:
                return total
            total += stage_batch(ids, owner, yielding=lane == REALTIME, hand_over=then is not None)
            if then is not None:
                then(ids, owner)
        if time_budget is not None and time.monotonic() - started > time_budget:
            return total


def _due(flow_id: int | None, lane: str | None, within: float = 0.0) -> Any:
    now = timezone.now()
    qs = SourceEvent.objects.due_for_staging(now + timedelta(seconds=within)).order_by(
        "next_attempt_at", "pk"
    )
    if within:  # still leased now (due_for_staging reads the lease at the moment it is given)
        qs = qs.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    if flow_id is not None:
        qs = qs.filter(flow_id=flow_id)
    if lane is not None:
        qs = qs.filter(lane=lane)
    return qs


# The entity type whose staging comes out the same in any order (`claim_due`).
ORDER_FREE_ENTITY = "stock"


def claim_due(flow_id: int | None, lane: str | None, owner: str, limit: int) -> list[int]:
    """Lease a batch of due events. With no lane, the realtime lane's first. A realtime batch
    brings along the due bulk events of the same entities (an order's update waiting behind a
    backfill, say), so an entity's events are staged in source-version order within the batch.
    Stock levels are the exception: their staging does not depend on the order events come in
    (snapshots replace by `as_of`, deltas apply after the latest snapshot, `stage_stock`), so a
    snapshot with nothing saleable does not take a stock refresh's thousands of deltas into the
    realtime lane with it."""
    if lane is None:
        ids = claim_due(flow_id, REALTIME, owner, limit)
        if len(ids) < limit:
            ids += claim_due(flow_id, BULK, owner, limit - len(ids))
        return ids
    due = _due(flow_id, lane)
    if lane == BULK:
        for workspace_id, entity_keys in _realtime_waiting(flow_id).items():
            due = due.exclude(workspace_id=workspace_id, entity_key__in=sorted(entity_keys))
    ids = claim_ids(due, limit=limit, owner=owner, lease_seconds=LEASE_SECONDS)
    if ids and lane == REALTIME:
        # One `entity_key IN (…)` per workspace (a flow's batch names one), which reads the
        # `event_entity` index as an OR of a hundred pairs did, at a fraction of the ORM's cost.
        keys: dict[int, set[str]] = {}
        for workspace_id, entity_key in (
            SourceEvent.objects.filter(pk__in=ids)
            .exclude(entity_type=ORDER_FREE_ENTITY)
            .values_list("workspace_id", "entity_key")
        ):
            keys.setdefault(workspace_id, set()).add(entity_key)
        if keys:
            same = Q()
            for workspace_id, entity_keys in keys.items():
                same |= Q(workspace_id=workspace_id, entity_key__in=sorted(entity_keys))
            earlier = _due(flow_id, BULK).filter(same)
            ids += claim_ids(earlier, limit=limit, owner=owner, lease_seconds=LEASE_SECONDS)
    return ids


def _realtime_waiting(flow_id: int | None) -> dict[int, set[str]]:
    """The entities, per workspace, of realtime events waiting to be staged (due, set aside for
    a moment, or being staged) in the flow's workspace: a bulk batch leaves their events alone
    meanwhile. A realtime batch that meets a bulk batch's rows sets the entity aside until that
    batch commits (`_split`); no later bulk batch takes the rows before it, so it is never
    starved however hot the entity (a SKU's stock refresh), and never waits in the lock's queue
    holding up the rest of its lane. The realtime batch brings the bulk events along
    (`claim_due`), stock levels' excepted, which stay for the bulk lane's next batch. Neither a
    realtime event retrying a failure later (seconds to an hour) nor one left unstaged for a
    minute (a lane far behind, or stuck) holds the bulk lane.

    Read first, not as a NOT EXISTS beside the claim: how many events wait swings from none to
    tens of thousands within seconds, faster than PostgreSQL's statistics follow, and the
    planner then read every waiting event for each row it claimed (seconds a claim). Here the
    realtime lane's own index (`event_stage_due`) gives the few, once a claim."""
    now = timezone.now()
    flows = Flow.objects.all()
    if flow_id is not None:
        flows = flows.filter(workspace__flows=flow_id)
    waiting: dict[int, set[str]] = {}
    for flow in flows.values_list("pk", flat=True):
        # A flow at a time, in the index's order: so the plan is a range of it whatever the
        # statistics say (with the flows as a list, one read every waiting event of them).
        for workspace_id, entity_key in (
            SourceEvent.objects.filter(
                flow_id=flow,
                lane=REALTIME,
                state=SourceEvent.State.RECEIVED,
                next_attempt_at__lte=now + timedelta(seconds=REALTIME_WAITING_SECONDS),
                next_attempt_at__gte=now - timedelta(seconds=REALTIME_WAITING_MAX_SECONDS),
            )
            .order_by("next_attempt_at", "pk")
            .values_list("workspace_id", "entity_key")[:REALTIME_WAITING_KEYS]
        ):
            waiting.setdefault(workspace_id, set()).add(entity_key)
    return waiting


REALTIME_WAITING_SECONDS = 1.0
REALTIME_WAITING_MAX_SECONDS = 60.0
REALTIME_WAITING_KEYS = 2000  # beyond, the realtime lane is far behind: the rest may meet a lock


STAGE_ACTIVE_SECONDS = 15.0  # a staging task that claimed within this long is still at work


STAGE_LOCK = 0x53544147  # pg advisory lock class of "one staging task per flow and lane"
LANE_LOCK_OFFSET = {None: 0, REALTIME: 1, BULK: 2}


def _staging_elsewhere(flow_id: int, lane: str | None) -> bool:
    """Whether another worker is staging this flow's lane: it claimed events within the last
    `STAGE_ACTIVE_SECONDS` (a live task claims a batch every few seconds; a dead one's leases
    stop counting well before they expire)."""
    now = timezone.now()
    qs = SourceEvent.objects.filter(
        flow_id=flow_id,
        state__in=(SourceEvent.State.RECEIVED, SourceEvent.State.HELD),
        next_attempt_at__lte=now,
        lease_until__gt=now + timedelta(seconds=LEASE_SECONDS - STAGE_ACTIVE_SECONDS),
    )
    if lane is not None:
        qs = qs.filter(lane=lane)
    return qs.exclude(lease_owner="").exists()


@contextmanager
def flow_staging_lock(flow_id: int | None, lane: str | None = None) -> Iterator[bool]:
    """Whether this worker may stage the flow's lane: on PostgreSQL a session advisory lock per
    flow and lane (freed with the session if the worker dies); elsewhere, that no other worker
    claimed lately. The two lanes of a flow are staged side by side, each by one worker."""
    if flow_id is None:
        yield True
        return
    if connection.vendor != "postgresql":
        yield not _staging_elsewhere(flow_id, lane)
        return
    key = (STAGE_LOCK + LANE_LOCK_OFFSET[lane], flow_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", list(key))
        took = bool(cursor.fetchone()[0])
    try:
        yield took
    finally:
        if took:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(key))


def staging_due(flow_id: int | None, lane: str | None = None, *, within: float = 0.0) -> bool:
    """Whether events of the flow (of any flow, when None) and lane are due for staging (or will
    be `within` seconds from now)."""
    # In the claim's order, so PostgreSQL reads staging's index (`event_stage_due`, by flow and
    # lane): as a bare
    # EXISTS it chooses the flow's index of every waiting event, READY ones included, and steps
    # over the whole outbox.
    lanes = (lane,) if lane is not None else (REALTIME, BULK)
    return any(_due(flow_id, one, within).values_list("pk", flat=True)[:1] for one in lanes)


def _load(ids: list[int], owner: str) -> list[SourceEvent]:
    events = list(
        SourceEvent.objects.filter(pk__in=ids, lease_owner=owner).order_by(
            "entity_key", "source_version", "pk"
        )
    )
    # A batch's events name a few flows: each flow and workspace is read once and shared, not
    # joined to every event's row and built (its JSON parsed) again for each.
    flows = Flow.objects.select_related("workspace").in_bulk({e.flow_id for e in events})
    workspaces = {flow.workspace_id: flow.workspace for flow in flows.values()}
    if missing := {e.workspace_id for e in events} - workspaces.keys():
        workspaces.update(Workspace.objects.in_bulk(missing))
    for event in events:
        event.flow = flows.get(event.flow_id)
        event.workspace = workspaces[event.workspace_id]
    # The catalogue first, so a batch's orders are checked against its products.
    events.sort(key=lambda e: e.event_type != "product.updated")
    return events


def _claimed_at(events: list[SourceEvent]) -> datetime:
    """When the batch's events were claimed (their lease less its length): the attempt began then."""
    leases = [e.lease_until for e in events if e.lease_until is not None]
    if not leases:
        return timezone.now()
    return min(leases) - timedelta(seconds=LEASE_SECONDS)


# A realtime batch waits this long, at most, for a row another transaction holds (a bulk batch
# staging the same SKU's stock, say, on a worker at nice 10 that may hold it for seconds on two
# busy cores); then it stages its entities in two halves, so the rest does not wait.
YIELD_LOCK_MS = 30
YIELD_RETRY_SECONDS = 0.1  # an event set aside is due again this soon


def stage_batch(
    ids: Iterable[int], owner: str, *, yielding: bool = False, hand_over: bool = False
) -> int:
    """Stage the claimed events in one transaction. The fast path reads the state the batch
    names up front and stages without a savepoint per event; an event that would need one (it
    wrote and then ended otherwise than as written, or raised) sends the whole batch, undone, to
    the safe path: a savepoint per event, every lookup a query, as before.

    `yielding` (the realtime lane, on PostgreSQL): no wait for a locked row lasts longer than
    `YIELD_LOCK_MS`. A batch that would wait longer is staged as two, by entity (`_split`), until
    the entity whose rows are held is alone and set aside; on the safe path an event is set aside
    (`_stage_safely`) with the later events of its entity. The batch's end (aggregates, inserts,
    the commit's key checks) waits as long as it must: its events' work is done by then.

    `hand_over`: events staged READY stay leased to `owner`, who plans them next."""
    ids = list(ids)
    events = _load(ids, owner)
    begun = _claimed_at(events)
    yielding = yielding and connection.vendor == "postgresql"
    try:
        with transaction.atomic():
            if yielding:
                _lock_timeout(YIELD_LOCK_MS)
            batch = Batch(now=timezone.now(), begun=begun)
            batch.cache = read_state(events)
            _stage_all(events, batch, fast=True, yielding=yielding, hand_over=hand_over)
        return len(events)
    except (Abort, DatabaseError) as exc:  # DatabaseError: e.g. a deadlock reading the state
        if yielding and _lock_timed_out(exc):
            return _split(events, owner, hand_over)
        log.debug("staging batch of %s events: the safe path", len(events), exc_info=True)
    events = _load(ids, owner)
    with transaction.atomic():
        if yielding:
            _lock_timeout(YIELD_LOCK_MS)
        batch = Batch(now=timezone.now(), begun=begun)
        _stage_all(events, batch, fast=False, yielding=yielding, hand_over=hand_over)
    return len(events)


def _split(events: list[SourceEvent], owner: str, hand_over: bool) -> int:
    """A yielding batch met a row another transaction holds: its entities in two halves, in the
    batch's order (the catalogue first), each staged as a batch of its own; an entity alone is
    set aside, all its events, untried, until the bulk batch holding its rows has committed (no
    later one takes them first: `_realtime_waiting`)."""
    entities = list(dict.fromkeys((e.workspace_id, e.entity_key) for e in events))
    if len(entities) == 1:
        _set_aside([e.pk for e in events])
        return len(events)
    first = set(entities[: len(entities) // 2])
    ids = [e.pk for e in events if (e.workspace_id, e.entity_key) in first]
    rest = [e.pk for e in events if (e.workspace_id, e.entity_key) not in first]
    return stage_batch(ids, owner, yielding=True, hand_over=hand_over) + stage_batch(
        rest, owner, yielding=True, hand_over=hand_over
    )


def _lock_timeout(ms: int | None) -> None:
    """How long the rest of this transaction waits for a lock (PostgreSQL); None: as the server
    is configured."""
    with connection.cursor() as cursor:
        if ms is None:
            cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
        else:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{ms}ms"])


def _lock_timed_out(exc: BaseException | None) -> bool:
    """Whether the error, or one it came from, is PostgreSQL's lock_not_available."""
    for _ in range(5):
        if exc is None:
            return False
        if getattr(exc, "sqlstate", None) == "55P03":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


EVENT_FIELDS = (
    "state",
    "in_outbox",
    "reason",
    "hold",
    "hold_deadline",
    "next_attempt_at",
    "lease_owner",
    "lease_until",
    "staged_at",
    "failed_kind",
    "lane",
    "customer",
    "order",
    "order_ref",
)


def _note_writes(batch: Batch) -> Any:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.lstrip()[:6].upper().startswith("SELECT"):
            batch.wrote = True
        return execute(sql, params, many, context)

    return wrapper


def _stage_all(
    events: list[SourceEvent],
    batch: Batch,
    *,
    fast: bool,
    yielding: bool = False,
    hand_over: bool = False,
) -> None:
    batch.products = {e.pk for e in events if e.event_type == "product.updated"}
    aside: dict[tuple[int, str], list[int]] = {}  # an entity's events set aside
    for event in events:
        had_failed = bool(event.failed_kind)
        if fast:
            event.failed_kind = ""
            batch.wrote = False
            try:
                with connection.execute_wrapper(_note_writes(batch)):
                    stage_event(event, batch)
            except Outcome as outcome:
                if batch.wrote:
                    raise Abort from outcome  # its writes need undoing
                _apply_outcome(event, outcome, batch)
            except Exception as exc:
                raise Abort from exc
        elif not _stage_safely(event, batch, aside if yielding else None):
            continue  # set aside
        if not (hand_over and event.state == State.READY):  # else its claim's owner plans it
            event.lease_owner = ""
            event.lease_until = None
        if had_failed and event.state != State.FAILED:
            batch.passed.setdefault(event.workspace_id, []).append(event.key)
    if yielding:
        _lock_timeout(None)
        if aside:  # earlier events of an entity may have staged: only these are left out
            left = {pk for pks in aside.values() for pk in pks}
            _set_aside(sorted(left))
            events = [e for e in events if e.pk not in left]
    if batch.cache is not None:
        batch.cache.flush()
    batch.cache = None
    recompute_aggregates(batch.customers, batch.now)
    bulk_set(events, EVENT_FIELDS)
    for failure in batch.failures:
        _record(failure, batch.begun or batch.now)
    for workspace_id, keys in batch.passed.items():
        clear_occurrences(Workspace(pk=workspace_id), keys, stage=STAGE)
    _release(batch)


def _stage_safely(
    event: SourceEvent, batch: Batch, aside: dict[tuple[int, str], list[int]] | None
) -> bool:
    """The safe path: stage the event in a savepoint. With `aside` (a yielding batch), an event
    that waited too long for a row another transaction holds, or whose entity's earlier event
    did, is set aside (its savepoint undone, its row not written but by `_set_aside`); returns
    False then."""
    entity = (event.workspace_id, event.entity_key)
    if aside is None or entity not in aside:
        event.failed_kind = ""
        try:
            with transaction.atomic():
                stage_event(event, batch)
            return True
        except Outcome as outcome:
            _apply_outcome(event, outcome, batch)
            return True
        except DatabaseError as exc:
            if aside is None or not _lock_timed_out(exc):  # a race on a unique key
                log.info("staging %s raced: %s", event.pk, exc)
                _retry_later(event, batch, str(exc))
                return True
        except Exception as exc:
            log.exception("staging event %s failed", event.pk)
            _retry_later(event, batch, f"{type(exc).__name__}: {exc}")
            return True
        _forget_failures(event, batch)
    assert aside is not None
    aside.setdefault(entity, []).append(event.pk)
    return False


def _set_aside(pks: list[int]) -> None:
    """Claimed events left untried for rows another transaction holds: free, due again in
    `YIELD_RETRY_SECONDS` (from now, not the batch's start: the batch's wait must not make them
    due before it commits), the claim's attempt not counted."""
    SourceEvent.objects.filter(pk__in=pks).update(
        lease_owner="",
        lease_until=None,
        next_attempt_at=timezone.now() + timedelta(seconds=YIELD_RETRY_SECONDS),
        attempts=F("attempts") - 1,
    )
    log.debug("staging set %d events aside for rows other batches hold", len(pks))


def _forget_failures(event: SourceEvent, batch: Batch) -> None:
    batch.failures = [f for f in batch.failures if f.event is not event]


def _retry_later(event: SourceEvent, batch: Batch, reason: str) -> None:
    _forget_failures(event, batch)
    delay = min(5 * 2 ** min(event.attempts, 10), 3600)
    event.state = State.RECEIVED if event.state != State.HELD else State.HELD
    event.reason = f"Retrying: {reason}"[:2000]
    event.next_attempt_at = batch.now + timedelta(seconds=delay)


def _apply_outcome(event: SourceEvent, outcome: Outcome, batch: Batch) -> None:
    """The event's writes were undone; it ends in the outcome's state."""
    if outcome.state == State.FAILED:
        failed = failed_outcome(batch, event)
        if not outcome.reason and failed is not None:
            outcome.reason = failed.reason
    else:
        _forget_failures(event, batch)
    event.state = outcome.state
    event.reason = outcome.reason
    if outcome.state in (State.READY, State.SKIPPED, State.FAILED):
        event.staged_at = batch.now
        event.hold = Hold.NONE if outcome.state != State.FAILED else event.hold
    if outcome.state == State.FAILED:
        event.failed_kind = outcome.kind


def _record(failure: Failure, begun: datetime) -> None:
    event = failure.event
    flow = event.flow
    occurrence = record_occurrence(
        workspace=event.workspace,
        kind=failure.kind,
        event_key=event.key,
        stage=STAGE,
        message=failure.message,
        flow_key=flow.key if flow else "",
        flow_label=flow.name if flow else "",
        subject_key=failure.subject_key,
        subject_label=failure.subject_label,
        detail={"event_id": event.pk, "event_type": event.event_type, **failure.detail},
        source_event_id=event.source_event_id,
        order_number=failure.order_number,
        sku=failure.sku,
        email=failure.email,
        attempt_started_at=begun,
    )
    if occurrence.state == "skipped":  # the person who ignored or resolved the group decided
        SourceEvent.objects.filter(pk=event.pk).update(
            state=State.SKIPPED, reason=skipped_reason(occurrence.group.state, failure.kind)
        )


def _lanes_of(qs: Any) -> set[tuple[int | None, str]]:
    return set(qs.order_by().values_list("flow_id", "lane").distinct())


def _release(batch: Batch) -> None:
    """Orphans whose order arrived, and dispatches whose scan arrived, are due again now."""
    flows: set[tuple[int | None, str]] = set()
    for workspace_id, refs in batch.released_refs.items():
        refs.discard("")
        if refs:
            qs = SourceEvent.objects.filter(
                workspace_id=workspace_id, state=State.HELD, hold=Hold.ORPHAN, order_ref__in=refs
            )
            flows |= _lanes_of(qs)
            qs.update(next_attempt_at=batch.now)
    for workspace_id, order_keys in batch.released_keys.items():
        flows |= _release_keys(workspace_id, order_keys, batch)
    for workspace_id, keys in batch.released_entities.items():
        qs = SourceEvent.objects.filter(
            workspace_id=workspace_id, state=State.HELD, hold=Hold.ORPHAN, entity_key__in=keys
        )
        flows |= _lanes_of(qs)
        qs.update(next_attempt_at=batch.now)
    if batch.scanned_orders:
        qs = SourceEvent.objects.filter(
            state=State.HELD, hold=Hold.CARRIER_SCAN, order_id__in=batch.scanned_orders
        )
        flows |= _lanes_of(qs)
        qs.update(next_attempt_at=batch.now)
    wake_staging_pairs(flows)


def _release_keys(
    workspace_id: int, order_keys: set[tuple[str, str]], batch: Batch
) -> set[tuple[int | None, str]]:
    """Orphans of a source naming, by one of its order keys (in `data` or `links`), an order that
    has just been given it: due now. Returns their flows."""
    by_system: dict[str, list[str]] = {}
    for system, key in order_keys:
        by_system.setdefault(system, []).append(key)
    flows: set[tuple[int | None, str]] = set()
    for system, keys in by_system.items():
        qs = SourceEvent.objects.filter(
            workspace_id=workspace_id, state=State.HELD, hold=Hold.ORPHAN, source_system=system
        ).filter(Q(envelope__data__order_key__in=keys) | Q(envelope__links__order_key__in=keys))
        flows |= _lanes_of(qs)
        qs.update(next_attempt_at=batch.now)
    return flows


def stage_event(event: SourceEvent, batch: Batch) -> None:
    """Bring one event into the state; ends by raising Outcome (READY, HELD, SKIPPED, FAILED)."""
    flow = event.flow
    if flow is None:
        raise Outcome(State.SKIPPED, "No flow takes this event any more.")
    event.lane = intake_lane(event.event_type, event.data, backfill=event.is_backfill)
    handler = HANDLERS.get(event.event_type)
    if handler is None:
        raise Outcome(State.SKIPPED, f"No staging for {event.event_type}.")
    event.state = State.RECEIVED
    event.reason = ""
    handler(event, flow, batch)
    _finish(event, batch)


def _finish(event: SourceEvent, batch: Batch) -> None:
    """The handler wrote its state: FAILED when validation failed (the writes stand, delivery
    waits for the fix), HELD when it chose to hold, else READY."""
    outcome = failed_outcome(batch, event)
    if outcome is not None:
        event.state = State.FAILED
        event.failed_kind = outcome.kind
        event.reason = outcome.reason
    elif event.state != State.HELD:
        event.state = State.READY
        event.hold = Hold.NONE
    event.in_outbox = False  # staged again (a release, a retry): planned afresh
    if event.state != State.HELD:
        event.staged_at = batch.now
