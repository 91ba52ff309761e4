"""Waking the workers. Messages only wake them: the rows are the work, and a lost message costs
only the sweepers' latency (`sweep_engine`, `sweep_delivery` in monitoring/tasks.py).

Tasks are named, not imported: the pipeline sits below the tasks that call it. A message goes
through the registered task's `apply_async` when this process has the task (so Celery's
`task_always_eager` runs it in place), and through `send_task` when it does not (a web process
that never loaded monitoring/tasks.py); either way the task's routes and options are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)

STAGE_EVENTS = "monitoring.stage_events"
FETCH_NOTIFICATIONS = "monitoring.fetch_notifications"
DELIVER_REALTIME = "monitoring.deliver_realtime"
DELIVER_BULK = "monitoring.deliver_bulk"
EXPIRES = 300  # seconds: a wake-up older than this is stale; the sweeper has sent a fresh one


def _apply(name: str, args: tuple[Any, ...], **options: Any) -> None:
    current_app.signature(name).apply_async(args, **options)


def _send(name: str, args: tuple[Any, ...], queue: str, countdown: float = 0) -> None:
    try:
        _apply(name, args, queue=queue, expires=EXPIRES, countdown=countdown or None)
    except Exception:  # the broker is down: the rows wait for the sweeper
        log.warning("could not wake %s on %s; the sweeper will", name, queue, exc_info=True)


def stage_now(flow_id: int | None, *, lane: str = "realtime", countdown: float = 0) -> None:
    """Wake a staging worker for the flow's events of this lane (all flows when None), now, on
    the lane's own queue: staging a bulk backlog never holds a realtime worker."""
    _send(STAGE_EVENTS, (flow_id, lane), lane, countdown)


def fetch_now(notification_ids: list[int] | None) -> None:
    """Wake a fetching worker for these notifications (all due ones when None), now."""
    _send(FETCH_NOTIFICATIONS, (notification_ids,), "bulk")


def deliver_now(destination_id: int, lane: str) -> None:
    """Wake the lane's runner for this destination, now (its queue comes from the task routes)."""
    try:
        _apply(DELIVER_REALTIME if lane == "realtime" else DELIVER_BULK, (destination_id,))
    except Exception:  # the broker is down: the sweeper finds the rows
        log.warning("could not wake delivery of %s; the sweeper will", destination_id)


def wake_staging(flow_ids: Iterable[int], *, lane: str = "realtime") -> None:
    """After commit, wake a staging worker per flow, for the flow's events of this lane."""
    for flow_id in sorted(set(flow_ids)):
        transaction.on_commit(partial(stage_now, flow_id, lane=lane), robust=True)


def wake_staging_pairs(pairs: Iterable[tuple[int | None, str]]) -> None:
    """After commit, wake staging for each (flow, lane) with events due again (released, retried)."""
    for flow_id, lane in sorted({(f, lane) for f, lane in pairs if f is not None}):
        transaction.on_commit(partial(stage_now, flow_id, lane=lane), robust=True)


def wake_fetch(notification_ids: list[int]) -> None:
    """After commit, wake a fetching worker for these notifications."""
    if notification_ids:
        transaction.on_commit(partial(fetch_now, notification_ids), robust=True)


def wake_delivery(destination_id: int, lane: str) -> None:
    """After commit, wake the lane's runner for this destination."""
    transaction.on_commit(partial(deliver_now, destination_id, lane), robust=True)
