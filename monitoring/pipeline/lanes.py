"""The runners that move events along, and the sweepers that find what a lost message forgot.

- **Staging a flow** (`stage_flow`): one worker stages a flow at a time, a batch after another,
  and plans each batch's READY events right after it commits (`plan_after_staging`), which wakes
  the delivery lanes; a trickle of a few events is sent at once (`send_realtime_now`).
- **A delivery lane** (`serve_lane`, `run_lane`): one runner per destination and lane (a
  `LaneRunner` lease) plans what staging left, sends due operations and polls imports until
  nothing is due.
- **Sweepers** (`wake_due_staging`, `wake_due_lanes`): beat runs them every few seconds; the
  first also ends the claims of workers that died (`free_dead_claims_everywhere`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from django.db import connection
from django.db.models import Min, Q
from django.utils import timezone

from connectors.dotdigital.client import DotDigitalClient
from connectors.models import Connection
from monitoring.models import (
    DeliveryBatch,
    Flow,
    LaneRunner,
    Operation,
    SourceEvent,
    SourceNotification,
)
from monitoring.pipeline import wake
from monitoring.pipeline.claims import free_dead_claims, worker_token
from monitoring.pipeline.confirm import lane_imports, run_confirmation
from monitoring.pipeline.deliver import due_operations, nothing_to_send, send_due
from monitoring.pipeline.destination import client_for
from monitoring.pipeline.lane_rules import LANES, REALTIME
from monitoring.pipeline.plan import plan_batch, ready_events, run_planning
from monitoring.pipeline.staging.run import YIELD_RETRY_SECONDS as YIELD_RETRY
from monitoring.pipeline.staging.run import flow_staging_lock, run_staging, staging_due

log = logging.getLogger(__name__)

STAGE_TIME_BUDGET = 20.0  # seconds a staging task works before handing over to a fresh message
INLINE_SEND_MAX = 50  # events planned after a staged batch, at most, for the task to send them too
INLINE_SEND_ROUNDS = 3

RUN_SECONDS = {"realtime": 25.0, "bulk": 25.0}
# A runner's lease is short and renewed while it works, so a killed worker's lane is taken up by
# the sweeper (every 2 s) within seconds of the lease running out, not after the whole run.
LANE_LEASE_SECONDS = 15.0
LANE_RENEW_SECONDS = 5.0
# A runner keeps looking for newly staged events this long before it returns. Staging wakes the
# lanes after each batch commits (`stage_flow`), so this only saves the wake-up's hop.
LINGER_SECONDS = {"realtime": 2.0, "bulk": 2.0}
# How often an idle runner looks again: the bulk lane waits for a batch worth an import anyway.
IDLE_SLEEP = {"realtime": 0.05, "bulk": 1.0}
PLAN_IDLE_INTERVAL = 0.5  # seconds between a runner's looks for events left unplanned


# -- staging --------------------------------------------------------------------------------------


def stage_flow(flow_id: int | None = None, lane: str | None = None) -> int:
    """Stage the flow's due events of one lane (both, realtime first, when None) a batch at a time
    until none is due (or the time budget is spent), planning each batch's READY events right
    after it commits, which wakes the delivery lanes. Returns how many it staged.

    One worker stages a flow's lane at a time, on the lane's queue: a wake-up that finds it taken
    returns at once (the worker at it loops until nothing is due, and looks again after letting
    go). The realtime lane is staged beside a bulk backlog, never behind it: a bulk batch is a
    bounded slice (`BATCH_SIZE` events) on the bulk queue's worker, and a realtime batch sets
    aside the entities whose rows a bulk batch holds and stages the rest (`stage_batch`)."""
    staged = 0
    with flow_staging_lock(flow_id, lane) as mine:
        if not mine:
            return 0
        destination_id = None
        if flow_id is not None:
            destination_id = (
                Flow.objects.filter(pk=flow_id).values_list("destination_id", flat=True).first()
            )
        # A flow not yet connected to DotDigital keeps its events READY until it is.
        then = None
        if flow_id is None or destination_id is not None:
            then = partial(plan_after_staging, destination_id)
        started = time.monotonic()
        while time.monotonic() - started < STAGE_TIME_BUDGET:
            done = run_staging(flow_id=flow_id, lane=lane, time_budget=0.0, then=then)
            if not done:
                # A realtime batch sets aside what waits for a bulk batch's rows (`stage_batch`):
                # it is due again in a moment, and this worker stays to stage it.
                if staged and lane == REALTIME and staging_due(flow_id, lane, within=YIELD_RETRY):
                    time.sleep(YIELD_RETRY / 2)
                    continue
                break
            staged += done
    # After letting go: whatever arrived meanwhile (its wake-up may have found the lane taken).
    # At once if this worker staged, or for the realtime lane if an event is due now: it came
    # after the last claim, its wake-up found the lane taken, and a second's wait would be all
    # its latency. Otherwise in a second: what is due waits for a row a bulk batch holds, or is
    # one a bulk claim leaves to a realtime event, and would only be looked at again and again.
    for due_lane in (lane,) if lane is not None else LANES:
        if staging_due(flow_id, due_lane, within=YIELD_RETRY):
            at_once = staged or (due_lane == REALTIME and staging_due(flow_id, REALTIME))
            wake.stage_now(flow_id, lane=due_lane or REALTIME, countdown=0 if at_once else 1)
    return staged


def plan_after_staging(destination_id: int | None, event_ids: list[int], owner: str) -> int:
    """A batch just staged: its READY events, still leased to the claim that staged them (no
    second claim), are planned into the outbox now, in this worker, and the lanes of their
    operations woken after that commits (`plan.plan_batch`). The lane runners then only send
    and confirm, and a dispatch does not wait for the sweeper or a runner's planning of a
    backlog. A trickle's writes are sent here too (`send_realtime_now`). Returns how many it
    planned."""
    try:
        planned = plan_batch(event_ids, owner)
    except Exception:  # the lane runners plan what is left
        log.exception("planning after staging failed")
        SourceEvent.objects.filter(pk__in=event_ids, lease_owner=owner).update(
            lease_owner="", lease_until=None
        )
        return 0
    if destination_id is not None and 0 < planned <= INLINE_SEND_MAX:
        send_realtime_now(destination_id)
    return planned


def send_realtime_now(destination_id: int) -> int:
    """A few events just planned (a trading day's trickle, not a backlog): send the realtime
    lane's due writes here, at once, rather than when the lane runner next looks (its pick-up
    would be most of a dispatch's queue time). Claims are leases, so this and the runner never
    send one operation twice; a backlog is left to the runner, so staging is not held up by
    DotDigital's latency. Returns how many operations it claimed."""
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


def free_dead_claims_everywhere() -> int:
    """End the leases of the claims whose worker is no longer at work (PostgreSQL: its lock went
    with its connection), so the sweepers find the work due at once; elsewhere, none."""
    now = timezone.now()
    events = SourceEvent.objects.filter(lease_until__gt=now)
    State = SourceEvent.State
    return sum(
        free_dead_claims(leased)
        for leased in (
            events.filter(state__in=(State.RECEIVED, State.HELD)),  # staging's claims
            events.filter(state=State.READY, in_outbox=False),  # planning's
            Operation.objects.filter(state=Operation.State.SENDING, lease_until__gt=now),
            DeliveryBatch.objects.filter(
                state=DeliveryBatch.State.SUBMITTED, lease_until__gt=now
            ),  # a new import's sender's, and pollers'
        )
    )


def wake_due_staging() -> dict[str, int]:
    """Wake staging for every flow with due rows (new, released, past a hold's deadline, or
    whose lease expired or whose claimant died) and fetching for due notifications."""
    free_dead_claims_everywhere()
    now = timezone.now()
    flows = set(
        SourceEvent.objects.due_for_staging(now)
        .exclude(flow_id__isnull=True)
        .order_by()
        .values_list("flow_id", "lane")
        .distinct()
    )
    for flow_id, lane in sorted(flows):
        wake.stage_now(flow_id, lane=lane)
    notes = SourceNotification.objects.filter(
        state=SourceNotification.State.PENDING, next_attempt_at__lte=now
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    if notes.exists():
        wake.fetch_now(None)
    return {"flows": len({flow_id for flow_id, _ in flows}), "notifications": int(notes.exists())}


# -- delivery lanes -------------------------------------------------------------------------------


def serve_lane(destination_id: int, lane: str) -> dict[str, int]:
    """Take the lane's runner lease (else return at once: another runner is at it), run the lane,
    let go, and wake the lane again if work came meanwhile (its wake-up found the lane taken)."""
    owner = worker_token()
    now = timezone.now()
    runner, _ = LaneRunner.objects.get_or_create(destination_id=destination_id, lane=lane)
    took = (
        LaneRunner.objects.filter(pk=runner.pk)
        .filter(Q(owner="") | Q(until__lt=now))
        .update(owner=owner, until=now + timedelta(seconds=LANE_LEASE_SECONDS))
    )
    if not took:
        return {}

    def renew() -> None:
        LaneRunner.objects.filter(pk=runner.pk, owner=owner).update(
            until=timezone.now() + timedelta(seconds=LANE_LEASE_SECONDS)
        )

    try:
        counts = run_lane(
            destination_id,
            lane,
            time_budget=RUN_SECONDS[lane],
            linger=LINGER_SECONDS[lane],
            idle_sleep=IDLE_SLEEP[lane],
            renew=renew,
        )
    finally:
        LaneRunner.objects.filter(pk=runner.pk, owner=owner).update(owner="", until=None)
    if has_work_soon(destination_id, lane):
        wake.deliver_now(destination_id, lane)
    return counts


# A confirmer with nothing due waits for the next import's poll time (or a nudge from the loop
# after it sends), between these bounds: looking every 0.05 s cost a query each time. At most
# less than an import's first poll (`sending.FIRST_POLL_MIN`), so an import another sender (a
# staging task) sent is never polled late.
CONFIRM_IDLE = 0.05
CONFIRM_IDLE_MAX = 0.25


class Confirmer(threading.Thread):
    """Polls and finishes a lane's imports beside its runner's sending loop, so an import is seen
    finished when DotDigital says so, not when the loop next gets round to it between sends
    (each a claim, its calls and its recording: 0.3–0.5 s on two busy cores). On PostgreSQL
    only: a thread has its own connection there, where SQLite's one writer would make the two
    wait on each other. Claims are leases, so the thread and any other poller never finish one
    import twice."""

    def __init__(self, destination_id: int, lane: str) -> None:
        super().__init__(name=f"confirm-{destination_id}-{lane}", daemon=True)
        self.destination_id = destination_id
        self.lane = lane
        self.halt = threading.Event()
        self.nudged = threading.Event()
        self.confirmed = 0

    def run(self) -> None:
        try:
            destination = Connection.objects.filter(pk=self.destination_id).first()
            if destination is None:
                return
            client = client_for(destination, self.lane)
            while not self.halt.is_set():
                confirmed = run_confirmation(client, self.destination_id, self.lane)
                self.confirmed += confirmed
                if not confirmed:
                    self.nudged.wait(self.idle_wait())
                    self.nudged.clear()
        except Exception:  # the runner's loop polls while this thread is not alive
            log.exception("confirming the %s lane's imports failed", self.lane)
        finally:
            connection.close()

    def idle_wait(self) -> float:
        """Seconds until the lane's next import is due a poll, within the idle bounds."""
        due = lane_imports(self.destination_id, self.lane).aggregate(due=Min("next_attempt_at"))[
            "due"
        ]
        if due is None:
            return CONFIRM_IDLE_MAX
        wait = float((due - timezone.now()).total_seconds())
        return min(CONFIRM_IDLE_MAX, max(CONFIRM_IDLE, wait))

    def nudge(self) -> None:
        """The loop sent something: an import may be in flight now."""
        self.nudged.set()

    def stop(self) -> int:
        self.halt.set()
        self.nudged.set()
        self.join()
        return self.confirmed


def run_lane(
    destination_id: int,
    lane: str,
    *,
    time_budget: float = 20.0,
    linger: float = 0.0,
    idle_sleep: float = 0.1,
    renew: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Plan, send and confirm one destination's lane until nothing is due (then keep looking for
    `linger` seconds) or the time budget is spent; `renew` keeps the runner's lease while it
    works. Returns counts of what it did."""
    counts = {"planned": 0, "sent": 0, "confirmed": 0}
    destination = Connection.objects.filter(pk=destination_id).first()
    if destination is None:
        return counts
    client = client_for(destination, lane)
    confirmer = None
    if lane == REALTIME and connection.vendor == "postgresql":
        confirmer = Confirmer(destination_id, lane)
        confirmer.start()
    try:
        _run_loop(
            destination, lane, client, counts, confirmer, time_budget, linger, idle_sleep, renew
        )
    finally:
        if confirmer is not None:
            counts["confirmed"] += confirmer.stop()
    return counts


def _run_loop(
    destination: Connection,
    lane: str,
    client: DotDigitalClient,
    counts: dict[str, int],
    confirmer: Confirmer | None,
    time_budget: float,
    linger: float,
    idle_sleep: float,
    renew: Callable[[], None] | None,
) -> None:
    destination_id = destination.pk
    started = time.monotonic()
    renewed = started
    idle_since = started
    next_plan = 0.0
    idle = False
    while time.monotonic() - started < time_budget:
        if renew is not None and time.monotonic() - renewed >= LANE_RENEW_SECONDS:
            renew()
            renewed = time.monotonic()
        t0 = time.monotonic()
        # An idle round of a lane whose imports a confirmer polls: nothing to plan yet and
        # nothing due to send is one query, not a claim's dozen.
        if (
            idle
            and confirmer is not None
            and t0 < next_plan
            and nothing_to_send(destination_id, lane)
        ):
            if time.monotonic() - idle_since >= linger and not has_work_soon(destination_id, lane):
                break
            time.sleep(idle_sleep)
            continue
        destination.refresh_from_db(fields=["status", "options"])
        planned = 0
        if t0 >= next_plan:  # staging plans as it goes: the runner plans only what is left
            planned = run_planning(lane=lane, destination_id=destination_id, time_budget=5.0)
            next_plan = t0 + (0.0 if planned else PLAN_IDLE_INTERVAL)
        t1 = time.monotonic()
        sent = send_due(destination, lane, client)
        t2 = time.monotonic()
        if sent and confirmer is not None:
            confirmer.nudge()
        confirmed = 0
        if not destination.is_paused and (confirmer is None or not confirmer.is_alive()):
            confirmed = run_confirmation(client, destination_id, lane)
        if planned or sent or confirmed:
            log.debug(
                "%s lane: planned %d in %.3fs, sent %d in %.3fs, confirmed %d in %.3fs",
                lane,
                planned,
                t1 - t0,
                sent,
                t2 - t1,
                confirmed,
                time.monotonic() - t2,
            )
        counts["planned"] += planned
        counts["sent"] += sent
        counts["confirmed"] += confirmed
        if destination.is_paused:  # queued until a connection test succeeds
            break
        idle = not (planned or sent or confirmed)
        if not idle:
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since >= linger and not has_work_soon(destination_id, lane):
            break
        time.sleep(idle_sleep)


def has_work_soon(destination_id: int, lane: str) -> bool:
    """Events to plan, imports in flight or operations waiting (a poll or a backoff will come
    due). Checked after a runner lets go of its lane too: a wake-up that came while it ran found
    the lane taken and returned."""
    return (
        ready_events(lane=lane, destination_id=destination_id).exists()
        or lane_imports(destination_id, lane).exists()
        or Operation.objects.filter(
            destination_id=destination_id,
            lane=lane,
            state=Operation.State.PENDING,
            next_attempt_at__lte=timezone.now() + timedelta(seconds=2),
        ).exists()
    )


def wake_due_lanes() -> int:
    """Wake each lane with work (ready events, due operations, imports to poll, expired leases)
    whose runner is not running. Returns how many it woke."""
    now = timezone.now()
    woken = 0
    running = set(LaneRunner.objects.filter(until__gte=now).values_list("destination_id", "lane"))
    for conn in Connection.objects.filter(
        kind=Connection.Kind.DOTDIGITAL, status=Connection.Status.ACTIVE
    ):
        for lane in ("realtime", "bulk"):
            if (conn.pk, lane) in running:
                continue
            work = (
                ready_events(lane=lane, destination_id=conn.pk, now=now).exists()
                or due_operations(conn.pk, lane, now).exists()
                or lane_imports(conn.pk, lane).exists()
            )
            if work:
                wake.deliver_now(conn.pk, lane)
                woken += 1
    return woken
