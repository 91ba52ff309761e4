"""A task run by a real Celery worker over a real broker (Redis, RabbitMQ) when it answers."""

from __future__ import annotations

import time
import uuid

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from monitoring.models import WorkerHeartbeat
from tests.conftest import NETWORK_BROKERS


def app_on(broker_url: str) -> Celery:
    """Our Celery configuration, pointed at one broker (the shared task registers on it)."""
    app = Celery("syncdesk-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url=broker_url, broker_transport_options={}, worker_enable_remote_control=False
    )
    app.autodiscover_tasks(force=True)  # as `celery -A config worker` does: each app's tasks.py
    return app


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker_url", NETWORK_BROKERS)
def test_a_real_worker_runs_the_heartbeat_task(broker_url, monkeypatch):
    # Celery prefers $CELERY_BROKER_URL to an app's broker_url: CI sets it to Redis.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = app_on(broker_url)
    queue = f"test-{uuid.uuid4().hex[:8]}"  # a queue of its own: parallel runs never share one
    with start_worker(
        app, queues=[queue], pool="solo", perform_ping_check=False, shutdown_timeout=60
    ):
        app.send_task("monitoring.record_heartbeat", args=[queue], queue=queue)
        for _ in range(600):  # up to 60 s (a loaded CI machine): a bound, not a timing assertion
            if WorkerHeartbeat.objects.filter(queue=queue).exists():
                break
            time.sleep(0.1)
    assert WorkerHeartbeat.objects.filter(queue=queue).exists()
