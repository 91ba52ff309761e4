"""A task run by a real Celery worker over a real broker (Redis, RabbitMQ) when it answers."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.db import connection
from django.utils import timezone

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


@pytest.mark.django_db(transaction=True)
def test_a_worker_thread_writes_while_another_thread_reads_the_same_table():
    # What a worker started in the test's process meets: the test's thread polling the table the
    # task writes. On SQLite the write waits out the busy timeout, never "table is locked".
    for name in ("a", "b", "c"):
        WorkerHeartbeat.objects.create(queue=name, hostname="h", seen_at=timezone.now())
    errors: list[BaseException] = []

    def write() -> None:
        try:
            WorkerHeartbeat.objects.update_or_create(
                queue="writer", defaults={"hostname": "h", "seen_at": timezone.now()}
            )
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    with connection.cursor() as cursor:
        cursor.execute("SELECT queue FROM monitoring_workerheartbeat")
        cursor.fetchone()  # a read in progress on the table: rows are left to fetch
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=60)
    assert errors == []
    assert WorkerHeartbeat.objects.filter(queue="writer").exists()
