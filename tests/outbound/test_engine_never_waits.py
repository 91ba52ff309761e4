"""Nothing in the engine waits on a webhook receiver: the engine only writes rows, and the webhook
sender runs on a queue of its own."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection

from monitoring.models import SourceEvent
from outbound import delivery
from outbound.models import Delivery
from tests.monitoring.engine import stage
from tests.outbound.conftest import subscribe


@pytest.mark.django_db(transaction=True)
def test_the_engine_stages_and_files_exceptions_while_the_receiver_hangs(world, erp, receiver):
    subscribe(world.workspace, receiver.url, ["group.opened"])
    receiver.hold = threading.Event()
    erp.post(erp.order("SO-1", email=None))
    stage()

    def webhook_worker() -> None:
        try:
            delivery.deliver_due(limit=1)
        finally:
            connection.close()

    worker = threading.Thread(target=webhook_worker)
    worker.start()
    assert receiver.arrived.wait(10), "the webhook worker never called the receiver"
    # The receiver holds the first POST; meanwhile the engine takes the next events to the end.
    erp.post(erp.order("SO-2", currency="EUR"))
    erp.post(erp.order("SO-3"))
    assert stage() >= 2
    assert receiver.hold is not None and not receiver.hold.is_set()
    assert worker.is_alive()  # still waiting on the receiver
    states = dict(SourceEvent.objects.values_list("source_event_id", "state"))
    assert sorted(states.values()) == ["failed", "failed", "ready"]
    # The second group's delivery is written, waiting for a webhook worker.
    assert Delivery.objects.filter(state="pending").count() == 2
    receiver.hold.set()
    worker.join(10)
    assert not worker.is_alive()
    assert Delivery.objects.filter(state="delivered").count() == 1


def test_the_sender_runs_on_its_own_queue_never_an_engine_lane():
    routes = settings.CELERY_TASK_ROUTES
    assert routes["outbound.deliver_webhooks"] == {"queue": "webhooks"}
    assert routes["outbound.prune_webhook_log"] == {"queue": "webhooks"}
    assert settings.CELERY_BEAT_SCHEDULE["webhooks-send"]["task"] == "outbound.deliver_webhooks"
    # A receiver costs a worker at most the timeouts, well under the tasks' soft limit.
    connect, read = delivery.TIMEOUT
    assert connect + read < delivery.LEASE.total_seconds() < settings.CELERY_TASK_SOFT_TIME_LIMIT
