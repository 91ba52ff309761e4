"""Celery tasks: thin, taking ids, calling monitoring.pipeline. Messages only wake workers; the
rows are the work, and `sweep_engine` (beat, every few seconds) wakes whatever is due."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from functools import partial

from celery import shared_task
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.models import SourceEvent, SourceNotification, WorkerHeartbeat

log = logging.getLogger(__name__)

STAGE_TIME_BUDGET = 20.0  # seconds a staging task works before handing over to a fresh message


@shared_task(name="monitoring.record_heartbeat")
def record_heartbeat(queue: str) -> None:
    """Beat sends one to each queue; the worker that takes it records that the lane is served."""
    WorkerHeartbeat.objects.update_or_create(
        queue=queue, defaults={"hostname": socket.gethostname(), "seen_at": timezone.now()}
    )


def _send(task: object, args: tuple[object, ...], queue: str) -> None:
    try:
        task.apply_async(args, queue=queue, expires=300)  # type: ignore[attr-defined]
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


@shared_task(name="monitoring.stage_events")
def stage_events(flow_id: int | None = None) -> int:
    """Stage the flow's due events until none is due (or the time budget is spent)."""
    from monitoring.pipeline.staging import run_staging

    staged = run_staging(flow_id=flow_id, time_budget=STAGE_TIME_BUDGET)
    qs = SourceEvent.objects.due_for_staging()
    if flow_id is not None:
        qs = qs.filter(flow_id=flow_id)
    if staged and qs.exists():
        _send(stage_events, (flow_id,), "realtime")
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
