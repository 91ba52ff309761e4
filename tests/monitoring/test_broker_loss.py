"""Work is rows, not messages: a broker that loses every message, or a worker killed mid-batch,
loses no event — the beat sweeper finds the rows and the work completes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from config.celery import app
from monitoring import tasks
from monitoring.models import SourceEvent
from monitoring.pipeline.claims import claim_ids
from tests.monitoring.engine import stage


@pytest.fixture
def eager_worker():
    """Messages sent from here on run at once, as if a worker took them."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def lose_queued_messages(settings) -> int:
    """Drop every queued message, as a Redis restart or a purge would; how many there were."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        files = [p for p in folder.iterdir() if p.is_file()]
        for message in files:
            message.unlink()
        return len(files)
    with app.connection_for_write() as conn:  # Redis or RabbitMQ (CI)
        return sum(conn.default_channel.queue_purge(q) or 0 for q in ("realtime", "bulk"))


def test_a_broker_that_loses_every_queued_message_loses_no_event(
    erp, settings, django_capture_on_commit_callbacks, eager_worker
):
    app.conf.task_always_eager = False  # a real broker first: the wake-ups are queued…
    with django_capture_on_commit_callbacks(execute=True):
        answer = erp.post([erp.order(f"SO-{n}") for n in range(5)])
    assert answer.status_code == 202
    # …and the broker loses them all (a Redis restart, a purge).
    assert lose_queued_messages(settings), "the webhook queued a wake-up"
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"received"}

    app.conf.task_always_eager = True
    swept = tasks.sweep_engine()  # beat's sweeper, a few seconds later
    assert swept["flows"] == 1
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"ready"}


def test_rows_leased_by_a_worker_killed_mid_batch_are_staged_once_the_lease_expires(erp):
    erp.post([erp.order(f"SO-{n}") for n in range(3)])
    claimed = claim_ids(
        SourceEvent.objects.due_for_staging(), limit=10, owner="killed-worker", lease_seconds=120
    )
    assert len(claimed) == 3
    assert stage() == 0  # another worker leaves leased rows alone
    with time_machine.travel(timezone.now() + timedelta(seconds=121)):
        assert stage() == 3
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"ready"}


def test_a_held_event_is_due_again_by_its_deadline_without_any_message(erp, wms):
    wms.post(wms.dispatch("SO-1"))
    stage()
    held = SourceEvent.objects.get()
    # A young hold looks again soon (a concurrent release may have missed it), never later than
    # its deadline.
    assert held.state == "held" and held.next_attempt_at <= held.hold_deadline
    assert not SourceEvent.objects.due_for_staging().exists()
    with time_machine.travel(held.next_attempt_at + timedelta(seconds=1)):
        assert SourceEvent.objects.due_for_staging().exists()
