"""Celery tasks: thin, taking ids, calling monitoring.pipeline. Messages only wake workers; the
rows are the work, and `sweep_engine` (beat, every few seconds) wakes whatever is due."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial

from celery import shared_task
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.models import SourceEvent, SourceNotification, WorkerHeartbeat

log = logging.getLogger(__name__)

STAGE_TIME_BUDGET = 20.0  # seconds a staging task works before handing over to a fresh message
PLAN_TIME_BUDGET = 5.0  # seconds of planning after each staged batch, at most
STAGE_ACTIVE_SECONDS = 15.0  # a staging task that claimed within this long is still at work
INLINE_SEND_MAX = 50  # events planned after a staged batch, at most, for the task to send them too
INLINE_SEND_ROUNDS = 3


@shared_task(name="monitoring.record_heartbeat")
def record_heartbeat(queue: str) -> None:
    """Beat sends one to each queue; the worker that takes it records that the lane is served."""
    WorkerHeartbeat.objects.update_or_create(
        queue=queue, defaults={"hostname": socket.gethostname(), "seen_at": timezone.now()}
    )


def _send(task: object, args: tuple[object, ...], queue: str, countdown: float = 0) -> None:
    try:
        task.apply_async(args, queue=queue, expires=300, countdown=countdown or None)  # type: ignore[attr-defined]
    except Exception:  # the broker is down: the rows wait for the sweeper
        log.warning("could not wake %s on %s; the sweeper will", task, queue, exc_info=True)


def wake_staging(flow_ids: Iterable[int], *, lane: str = "realtime") -> None:
    """After commit, wake a staging worker per flow (a lost message costs only sweeper latency)."""
    for flow_id in sorted(set(flow_ids)):
        transaction.on_commit(partial(_send, stage_events, (flow_id,), lane), robust=True)


def wake_fetch(notification_ids: list[int]) -> None:
    if notification_ids:
        transaction.on_commit(
            partial(_send, fetch_notifications, (notification_ids,), "bulk"), robust=True
        )


def plan_after_staging(flow_id: int | None, event_ids: list[int] | None = None) -> int:
    """Staged events are READY: plan them into the outbox now, in this worker, and wake the
    lanes of their operations after that commits (`plan.plan_batch`). The lane runners then
    only send and confirm, and a dispatch does not wait for the sweeper or a runner's planning
    of a backlog. `event_ids`: the batch just staged (planned by key; the runners plan anything
    else left READY). Returns how many it planned (0 when another worker got there first)."""
    from monitoring.models import Flow
    from monitoring.pipeline.plan import run_planning

    destinations: set[int | None] = {None}
    if flow_id is not None:
        destinations = set(Flow.objects.filter(pk=flow_id).values_list("destination_id", flat=True))
    planned = 0
    for destination_id in destinations:
        if flow_id is not None and destination_id is None:
            continue
        try:
            now_planned = run_planning(
                destination_id=destination_id, time_budget=PLAN_TIME_BUDGET, event_ids=event_ids
            )
        except Exception:  # the lane runners plan what is left
            log.exception("planning after staging failed")
            continue
        planned += now_planned
        if destination_id is not None and 0 < now_planned <= INLINE_SEND_MAX:
            send_realtime_now(destination_id)
    return planned


def send_realtime_now(destination_id: int) -> int:
    """A few events just planned (a trading day's trickle, not a backlog): send the realtime
    lane's due writes here, at once, rather than when the lane runner next looks (its pick-up was
    most of a dispatch's 0.3–0.6 s queue time at 3 events a second). Claims are leases, so this and
    the runner never send one operation twice; a backlog is left to the runner, so staging is not
    held up by DotDigital's latency. Returns how many operations it claimed."""
    from connectors.models import Connection
    from monitoring.pipeline.deliver import send_due

    destination = Connection.objects.filter(pk=destination_id).first()
    if destination is None:
        return 0
    claimed = 0
    try:
        # A second claim right away: a new contact's order record and lists become due only once
        # its upsert is delivered (contacts before the data that refers to them).
        for _ in range(INLINE_SEND_ROUNDS):
            now_claimed = send_due(destination, "realtime")
            claimed += now_claimed
            if not now_claimed:
                break
    except Exception:  # the runner sends what is left
        log.exception("sending right after planning failed")
    return claimed


def _staging_elsewhere(flow_id: int) -> bool:
    """Whether another worker is staging this flow: it claimed events within the last
    `STAGE_ACTIVE_SECONDS` (a live task claims a batch every few seconds; a dead one's leases
    stop counting well before they expire)."""
    from monitoring.pipeline.staging import LEASE_SECONDS

    now = timezone.now()
    return (
        SourceEvent.objects.filter(
            flow_id=flow_id,
            state__in=(SourceEvent.State.RECEIVED, SourceEvent.State.HELD),
            next_attempt_at__lte=now,
            lease_until__gt=now + timedelta(seconds=LEASE_SECONDS - STAGE_ACTIVE_SECONDS),
        )
        .exclude(lease_owner="")
        .exists()
    )


STAGE_LOCK = 0x53544147  # pg advisory lock class of "one staging task per flow"


@contextmanager
def _flow_staging_lock(flow_id: int | None) -> Iterator[bool]:
    """Whether this task may stage the flow: on PostgreSQL a session advisory lock per flow (freed
    with the session if the worker dies); elsewhere, that no other task claimed lately."""
    if flow_id is None:
        yield True
        return
    if connection.vendor != "postgresql":
        yield not _staging_elsewhere(flow_id)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [STAGE_LOCK, flow_id])
        took = bool(cursor.fetchone()[0])
    try:
        yield took
    finally:
        if took:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [STAGE_LOCK, flow_id])


@shared_task(name="monitoring.stage_events")
def stage_events(flow_id: int | None = None) -> int:
    """Stage the flow's due events a batch at a time until none is due (or the time budget is
    spent), planning each batch's READY events right after it commits, which wakes the delivery
    lanes (rather than leaving it to the sweeper or a lingering runner).

    One task stages a flow at a time: a wake-up that finds the flow taken returns at once (the
    task at work loops until nothing is due, and looks again after letting go). Without this,
    every webhook request's wake-up held a realtime worker slot for the whole backlog, and the
    lane runners queued behind them."""
    from monitoring.pipeline.staging import run_staging

    staged = 0
    with _flow_staging_lock(flow_id) as mine:
        if not mine:
            return 0
        started = time.monotonic()
        while time.monotonic() - started < STAGE_TIME_BUDGET:
            claimed: list[int] = []
            done = run_staging(flow_id=flow_id, time_budget=0.0, claimed=claimed)  # one batch
            if not done:
                break
            staged += done
            plan_after_staging(flow_id, claimed)
    # After letting go: whatever arrived meanwhile (its wake-up may have found the flow taken).
    qs = SourceEvent.objects.due_for_staging()
    if flow_id is not None:
        qs = qs.filter(flow_id=flow_id)
    # In the claim's order, so PostgreSQL reads staging's index (`event_stage_due`): as a bare
    # EXISTS it chose the flow's index of every waiting event, READY ones included, and stepped
    # over the whole outbox (53 ms a call at full load, the bench's costliest statement).
    if qs.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:1]:
        _send(stage_events, (flow_id,), "realtime", countdown=0 if staged else 1)
    return staged


@shared_task(name="monitoring.fetch_notifications")
def fetch_notifications(notification_ids: list[int] | None = None) -> int:
    from monitoring.pipeline.sources import run_fetch

    return run_fetch(notification_ids)


@shared_task(name="monitoring.poll_flow")
def poll_flow(flow_id: int) -> int:
    from monitoring.pipeline.sources import poll_flow as poll

    return poll(flow_id)


@shared_task(name="monitoring.sweep_engine")
def sweep_engine() -> dict[str, int]:
    """Beat: wake staging for every flow with due rows (new, released, past a hold's deadline, or
    whose lease expired) and fetching for due notifications. Finds what a lost message forgot."""
    now = timezone.now()
    flows = set(
        SourceEvent.objects.due_for_staging(now)
        .exclude(flow_id__isnull=True)
        .values_list("flow_id", flat=True)
        .distinct()
    )
    for flow_id in sorted(flows):
        _send(stage_events, (flow_id,), "realtime")
    notes = SourceNotification.objects.filter(
        state=SourceNotification.State.PENDING, next_attempt_at__lte=now
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    if notes.exists():
        _send(fetch_notifications, (None,), "bulk")
    return {"flows": len(flows), "notifications": int(notes.exists())}


from monitoring.delivery_tasks import *  # noqa: E402,F401,F403
from monitoring.reliability_tasks import *  # noqa: F401,F403,E402
from monitoring.watch_tasks import *  # noqa: E402,F401,F403
