"""Workers drain on SIGTERM: Celery's warm shutdown lets the task in progress finish before the
worker exits, and a task still waiting goes back to the broker for the next worker. A real
`celery -A config worker` on kombu's filesystem broker, running tests/reliability/drain_tasks.py."""

from __future__ import annotations

import base64
import json
import signal
import time
import uuid
from pathlib import Path

import pytest
from amqp.exceptions import ChannelError
from celery import Celery

from config.celery import app as syncdesk
from tests.conftest import NETWORK_BROKERS
from tests.reliability import processes as p

QUEUE = "drainprobe"


def sender(var: Path) -> Celery:
    """A client of the broker the worker under test reads (its filesystem folders under `var`)."""
    folders = {name: var / "broker" / name for name in ("queue", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    client = Celery("drain-test-sender", set_as_current=False)
    client.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "control_folder": str(folders["control"]),
            "store_processed": False,
        },
        task_serializer="json",
    )
    return client


def labels_queued(var: Path) -> list[str]:
    """The `label` argument of each drain_probe message waiting in the broker."""
    labels = []
    for message in p.queued(var, QUEUE):
        body = message["body"]
        assert isinstance(body, str)
        args, _kwargs, _embed = json.loads(base64.b64decode(body))
        labels.append(args[1])
    return labels


def worker_argv(name: str) -> list[str]:
    return [
        "worker",
        "-Q",
        QUEUE,
        "-n",
        f"{name}@%h",
        "--concurrency",
        "1",
        "-I",
        "tests.reliability.drain_tasks",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def test_settings_leave_the_warm_shutdown_alone():
    conf = syncdesk.conf
    assert (
        conf.worker_prefetch_multiplier == 1
    )  # a worker holds back one waiting message per process
    assert conf.task_acks_late is False  # a message is taken once it starts; its rows are the work
    # A hard limit bounds a drain: the service manager's stop timeout must be longer (README).
    assert conf.task_time_limit > conf.task_soft_time_limit
    assert conf.worker_soft_shutdown_timeout == 0  # SIGTERM is a warm shutdown, with no cut-off


@pytest.mark.slow
def test_a_worker_finishes_its_tasks_on_sigterm_and_leaves_the_rest_in_the_broker(
    tmp_path, monkeypatch
):
    # Celery prefers $CELERY_BROKER_URL to an app's broker_url: CI sets it to Redis.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    var, markers = tmp_path / "var", tmp_path / "markers"
    markers.mkdir()
    client = sender(var)
    labels = ["first", "second", "third", "fourth", "fifth"]
    for label in labels:
        client.send_task("tests.drain_probe", args=[str(markers), label], queue=QUEUE)
        time.sleep(0.01)  # the filesystem broker orders by the millisecond in the file's name
    env = p.celery_env(var)
    log = tmp_path / "worker.log"
    worker = p.start(worker_argv("drain-a"), env, log)
    next_worker = None

    def marked(suffix: str) -> list[str]:
        return [label for label in labels if (markers / f"{label}.{suffix}").exists()]

    try:
        p.wait_for((markers / "first.started").exists, "the worker starts the first task", 90)
        # With the first under way (and acknowledged), the worker prefetches one more.
        p.wait_for(lambda: p.read(log).count(" received") >= 2, "the worker prefetches the second")
        assert marked("done") == []

        worker.send_signal(
            signal.SIGTERM
        )  # what systemd (KillMode=mixed) or Docker send to stop it
        p.wait_for(lambda: "Warm shutdown" in p.read(log), "the worker begins its warm shutdown")
        # Still there, waiting for the task, which waits for us: exiting now would cut it short.
        assert worker.poll() is None
        assert marked("done") == []

        (markers / "release").touch()
        worker.wait(timeout=30)
        assert worker.returncode == 0, p.read(log)
        # Every task it took, the one in progress and the prefetched one, finished before it exited;
        # it stopped taking more; the rest wait in the broker, none lost, none taken twice.
        done, queued = marked("done"), labels_queued(var)
        assert marked("started") == done
        assert done[:2] == ["first", "second"]
        assert sorted(done + queued) == sorted(labels)  # (queued: in no particular order)
        assert queued, "the worker stopped taking new tasks once told to stop"

        next_worker = p.start(worker_argv("drain-b"), env, tmp_path / "next-worker.log")
        p.wait_for(lambda: marked("done") == labels, "the next worker runs the rest", 90)
        assert labels_queued(var) == []
    finally:
        for proc in (worker, next_worker):
            if proc is not None:
                p.stop(proc)


def waiting_in(client: Celery, queue: str) -> int:
    """Messages ready in `queue` on a network broker (a passive declare: never creates it; Redis
    drops an emptied list, so "no such queue" there means none waiting)."""
    with client.connection_for_read() as conn:
        try:
            declared = conn.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:
            return 0
        return int(declared.message_count)


@pytest.mark.slow
@pytest.mark.parametrize("broker_url", NETWORK_BROKERS)
def test_on_a_network_broker_a_worker_drains_on_sigterm_and_the_next_runs_the_rest_once(
    broker_url, tmp_path, monkeypatch
):
    # Celery prefers $CELERY_BROKER_URL to an app's broker_url (CI sets it to Redis): without
    # this the sender would post to Redis while the worker listens on RabbitMQ.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    # The production brokers: the task in progress and the one prefetched finish before exit;
    # the rest stay in the broker (nothing acknowledged and dropped); the next worker runs each
    # of them exactly once (a `.done` file gets one line per run).
    queue = f"drainprobe-{uuid.uuid4().hex[:12]}"  # this run's own queue on a shared broker
    var, markers = tmp_path / "var", tmp_path / "markers"
    markers.mkdir()
    client = Celery("drain-test-sender", set_as_current=False)
    client.conf.update(broker_url=broker_url, task_serializer="json")
    labels = ["first", "second", "third", "fourth", "fifth"]
    for label in labels:
        client.send_task("tests.drain_probe", args=[str(markers), label], queue=queue)
    env = {**p.celery_env(var), "CELERY_BROKER_URL": broker_url}
    log = tmp_path / "worker.log"
    argv = [queue if arg == QUEUE else arg for arg in worker_argv("drain-a")]
    worker = p.start(argv, env, log)
    next_worker = None

    def runs(label: str) -> int:
        path = markers / f"{label}.done"
        return len(path.read_text().splitlines()) if path.exists() else 0

    try:
        p.wait_for((markers / "first.started").exists, "the worker starts the first task", 90)
        p.wait_for(lambda: p.read(log).count(" received") >= 2, "the worker prefetches the second")
        worker.send_signal(signal.SIGTERM)
        p.wait_for(lambda: "Warm shutdown" in p.read(log), "the worker begins its warm shutdown")
        assert worker.poll() is None  # waiting for the task in progress, not cutting it short
        (markers / "release").touch()
        worker.wait(timeout=60)
        assert worker.returncode == 0, p.read(log)
        assert runs("first") == 1
        taken = [label for label in labels if runs(label)]
        assert waiting_in(client, queue) == len(labels) - len(taken)  # the rest are still there
        assert len(taken) < len(labels), "the worker stopped taking new tasks once told to stop"

        next_log = tmp_path / "next-worker.log"
        next_worker = p.start(
            [queue if arg == QUEUE else arg for arg in worker_argv("drain-b")], env, next_log
        )
        p.wait_for(
            lambda: all(runs(label) for label in labels), "the next worker runs the rest", 90
        )
        p.stop(next_worker)
        assert {label: runs(label) for label in labels} == dict.fromkeys(labels, 1)
        assert waiting_in(client, queue) == 0
    finally:
        for proc in (worker, next_worker):
            if proc is not None:
                p.stop(proc)
        with client.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue=queue)
