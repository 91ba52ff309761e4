"""The webhook sender run by a real Celery worker over a real broker (Redis, RabbitMQ) when it
answers: the task is registered under its name and sends the due delivery to a real receiver."""

from __future__ import annotations

import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker

from outbound.models import Delivery
from tests.conftest import NETWORK_BROKERS
from tests.monitoring.test_worker import app_on
from tests.outbound.conftest import subscribe


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker_url", NETWORK_BROKERS)
def test_a_real_worker_sends_the_due_delivery(broker_url, monkeypatch, world, receiver):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # CI points it at Redis
    app = app_on(broker_url)
    subscription = subscribe(world.workspace, receiver.url)
    Delivery.objects.create(subscription=subscription, event="group.opened", body='{"id":"1"}')
    queue = f"test-webhooks-{uuid.uuid4().hex[:8]}"  # a queue of its own: parallel runs share none
    with start_worker(
        app, queues=[queue], pool="solo", perform_ping_check=False, shutdown_timeout=60
    ):
        app.send_task("outbound.deliver_webhooks", queue=queue)
        for _ in range(600):  # up to 60 s (a loaded CI machine): a bound, not a timing assertion
            if Delivery.objects.filter(state="delivered").exists():
                break
            time.sleep(0.1)
    assert Delivery.objects.get().state == "delivered"
    [request] = receiver.requests
    assert request.body == b'{"id":"1"}'
