from __future__ import annotations

import socket

from celery import shared_task
from django.utils import timezone

from monitoring.models import WorkerHeartbeat


@shared_task(name="monitoring.record_heartbeat")
def record_heartbeat(queue: str) -> None:
    """Beat sends one to each queue; the worker that takes it records that the lane is served."""
    WorkerHeartbeat.objects.update_or_create(
        queue=queue, defaults={"hostname": socket.gethostname(), "seen_at": timezone.now()}
    )
