from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """The last time a worker consuming a queue ran a task: /healthz shows if a lane has no worker."""

    queue = models.CharField(max_length=40, unique=True)
    hostname = models.CharField(max_length=200)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.queue} @ {self.hostname}"
