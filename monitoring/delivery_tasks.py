"""Celery tasks of delivery and confirmation: thin, taking ids, calling monitoring.pipeline.

Messages only wake workers: `wake_delivery` (after commit) and `sweep_delivery` (beat, every
couple of seconds) send `deliver_realtime` / `deliver_bulk` to their own queues. One runner per
destination and lane works at a time (a `LaneRunner` lease); extra wake-ups return at once.
Imported by monitoring/tasks.py so Celery's autodiscovery registers them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from celery import shared_task
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connectors.models import Connection
from monitoring.models import DeliveryBatch, LaneRunner, Operation, ProgramEnrolment
from monitoring.pipeline.claims import worker_token

log = logging.getLogger(__name__)

__all__ = [
    "deliver_bulk",
    "deliver_realtime",
    "enrol_programs",
    "expire_list_memberships",
    "pull_suppressions",
    "sweep_delivery",
    "wake_delivery",
]

RUN_SECONDS = {"realtime": 25.0, "bulk": 25.0}
# A runner keeps looking for newly staged events this long before it returns. Staging wakes the
# lanes after each batch commits (`tasks.stage_events`), so this only saves the wake-up's hop.
LINGER_SECONDS = {"realtime": 2.0, "bulk": 2.0}
# How often an idle runner looks again: the bulk lane waits for a batch worth an import anyway.
IDLE_SLEEP = {"realtime": 0.05, "bulk": 1.0}


def _send(task: object, destination_id: int) -> None:
    try:
        task.delay(destination_id)  # type: ignore[attr-defined]
    except Exception:  # the broker is down: the sweeper finds the rows
        log.warning("could not wake delivery of %s; the sweeper will", destination_id)


def wake_delivery(destination_id: int, lane: str) -> None:
    """After the current transaction commits, wake the lane's runner for this destination."""
    task = deliver_realtime if lane == "realtime" else deliver_bulk
    transaction.on_commit(partial(_send, task, destination_id), robust=True)


def _run(destination_id: int, lane: str) -> dict[str, int]:
    from monitoring.pipeline.deliver import has_work_soon, run_lane

    owner = worker_token()
    now = timezone.now()
    runner, _ = LaneRunner.objects.get_or_create(destination_id=destination_id, lane=lane)
    took = (
        LaneRunner.objects.filter(pk=runner.pk)
        .filter(Q(owner="") | Q(until__lt=now))
        .update(owner=owner, until=now + timedelta(seconds=RUN_SECONDS[lane] + 60))
    )
    if not took:
        return {}
    try:
        counts = run_lane(
            destination_id,
            lane,
            time_budget=RUN_SECONDS[lane],
            linger=LINGER_SECONDS[lane],
            idle_sleep=IDLE_SLEEP[lane],
        )
    finally:
        LaneRunner.objects.filter(pk=runner.pk, owner=owner).update(owner="", until=None)
    if has_work_soon(destination_id, lane):
        _send(deliver_realtime if lane == "realtime" else deliver_bulk, destination_id)
    return counts


@shared_task(name="monitoring.deliver_realtime")
def deliver_realtime(destination_id: int) -> dict[str, int]:
    """Plan, send and confirm the realtime lane of one DotDigital connection."""
    return _run(destination_id, "realtime")


@shared_task(name="monitoring.deliver_bulk")
def deliver_bulk(destination_id: int) -> dict[str, int]:
    """Plan, send and confirm the bulk lane of one DotDigital connection."""
    return _run(destination_id, "bulk")


@shared_task(name="monitoring.sweep_delivery")
def sweep_delivery() -> int:
    """Beat: wake each lane with work (ready events, due operations, imports to poll, expired
    leases) whose runner is not running. Finds whatever a lost message forgot."""
    from monitoring.pipeline.deliver import due_operations
    from monitoring.pipeline.plan import ready_events

    now = timezone.now()
    woken = 0
    running = set(LaneRunner.objects.filter(until__gte=now).values_list("destination_id", "lane"))
    for conn in Connection.objects.filter(
        kind=Connection.Kind.DOTDIGITAL, status=Connection.Status.ACTIVE
    ):
        for lane, task in (("realtime", deliver_realtime), ("bulk", deliver_bulk)):
            if (conn.pk, lane) in running:
                continue
            work = (
                ready_events(lane=lane, destination_id=conn.pk, now=now).exists()
                or due_operations(conn.pk, lane, now).exists()
                or DeliveryBatch.objects.filter(
                    destination=conn, lane=lane, state=DeliveryBatch.State.SUBMITTED
                ).exists()
            )
            if work:
                _send(task, conn.pk)
                woken += 1
    return woken


@shared_task(name="monitoring.pull_suppressions")
def pull_suppressions() -> int:
    """Beat: DotDigital's opt-outs and bounces into Syncdesk's state, for every active account."""
    from connectors.dotdigital.errors import DotDigitalError
    from monitoring.pipeline.consent import pull_suppressions as pull

    total = 0
    for conn in Connection.objects.filter(
        kind=Connection.Kind.DOTDIGITAL, status=Connection.Status.ACTIVE
    ):
        try:
            total += pull(conn)
        except DotDigitalError as exc:
            log.warning("pulling suppressions of %s failed: %s", conn, exc)
    return total


@shared_task(name="monitoring.expire_list_memberships")
def expire_list_memberships() -> int:
    """Beat: take contacts off lists when their time is up (e.g. "Dispatched today")."""
    from monitoring.pipeline.programs import expire_memberships

    queued = expire_memberships()
    if queued:
        for destination_id in set(
            Operation.objects.filter(kind="list_remove", state="pending").values_list(
                "destination_id", flat=True
            )
        ):
            _send(deliver_bulk, destination_id)
    return queued


@shared_task(name="monitoring.enrol_programs")
def enrol_programs() -> int:
    """Beat: direct enrolments, batched within the hourly cap, each sent at most once."""
    from connectors.dotdigital.errors import DotDigitalError
    from monitoring.pipeline.programs import enrol_programs as enrol

    total = 0
    destinations = set(
        ProgramEnrolment.objects.filter(state="pending").values_list("destination_id", flat=True)
    )
    for conn in Connection.objects.filter(pk__in=destinations, status=Connection.Status.ACTIVE):
        try:
            total += enrol(conn)
        except DotDigitalError as exc:
            log.warning("enrolling for %s failed: %s", conn, exc)
    return total
