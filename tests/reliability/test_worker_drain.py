"""Workers drain on SIGTERM: Celery's warm shutdown lets the task in progress finish before the
worker exits, and a task still waiting goes back to the broker for the next worker. A real
`celery -A config worker` on kombu's filesystem broker, running tests/reliability/drain_tasks.py."""

from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path

import pytest
from celery import Celery

from config.celery import app as syncdesk
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
