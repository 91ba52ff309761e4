"""The Celery app: configured from Django settings (CELERY_*), tasks found in each app's tasks.py."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# `filesystem://` (the embedded default) is kombu's transport with messages written whole.
TRANSPORT_ALIASES["filesystem"] = "config.broker:Transport"

app = Celery("syncdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Two lanes with their own workers, so a slow bulk import never delays a dispatch; outbound
# webhooks have a third, so no receiver ever holds an engine worker.
app.conf.task_queues = (Queue("realtime"), Queue("bulk"), Queue("webhooks"))
app.autodiscover_tasks()
