"""A second beat started by mistake sends nothing while the first lives, and takes over when it
dies (config/beat.py): two real `celery -A config beat` processes on one database and broker."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.beat import FileLock, SingleBeatScheduler, file_lock_path, lock_for_database
from tests.reliability import processes as p

PROBE_QUEUE = "beatprobe"  # its own queue, so counting its messages counts this entry's sends
PROBE = "beat-lock-probe"


def database_for_subprocesses(tmp_path: Path) -> str:
    """A DATABASE_URL the beat processes can open holding this test's (committed) rows: the test
    database itself on PostgreSQL; on SQLite (an in-memory test database) a file copy of it."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    connection.ensure_connection()
    copy = sqlite3.connect(tmp_path / "beat.sqlite3")
    try:
        connection.connection.backup(copy)
    finally:
        copy.close()
    return f"sqlite:///{tmp_path / 'beat.sqlite3'}"


def sends_logged(log: Path) -> int:
    return p.read(log).count(f"Sending due task {PROBE} ")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_beat_stays_on_standby_and_takes_over_when_the_first_dies(tmp_path):
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=PROBE, task="tests.beat_lock_probe", interval=every_second, queue=PROBE_QUEUE
    )
    var = tmp_path / "var"
    env = p.celery_env(var, database_for_subprocesses(tmp_path))
    log_a, log_b = tmp_path / "beat-a.log", tmp_path / "beat-b.log"
    argv = ["beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "celerybeat-schedule")]

    def probes_from(pid: int) -> int:
        return sum(1 for m in p.queued(var, PROBE_QUEUE) if p.origin_pid(m) == pid)

    first = p.start(argv, env, log_a)
    second = None
    try:
        p.wait_for(lambda: probes_from(first.pid) >= 1, "the first beat sends the probe", 90)
        assert "took the" in p.read(log_a)
        second = p.start(argv, env, log_b)
        p.wait_for(lambda: "standby" in p.read(log_b), "the second beat says it is on standby", 90)
        seen = probes_from(first.pid)
        p.wait_for(lambda: probes_from(first.pid) >= seen + 3, "three more ticks of the first")

        # While both run, one of them sends: each tick's probe once, every probe from the first.
        assert first.poll() is None and second.poll() is None
        assert {p.origin_pid(m) for m in p.queued(var, PROBE_QUEUE)} == {first.pid}
        assert "Sending due task" not in p.read(log_b)
        if connection.vendor == "sqlite":
            assert f"held by {first.pid}@" in p.read(log_b)

        first.send_signal(signal.SIGKILL)  # no goodbye: the lock goes with the process
        first.wait(timeout=10)
        sent_by_first = probes_from(first.pid)
        # (the kill may fall between a send's log line and its message)
        assert sends_logged(log_a) - 1 <= sent_by_first <= sends_logged(log_a)

        p.wait_for(
            lambda: probes_from(second.pid) >= 2,
            "the standby takes over (it retries every "
            f"{SingleBeatScheduler.standby_interval:.0f} s) and sends the probe",
        )
        assert "took the" in p.read(log_b)
        assert probes_from(first.pid) == sent_by_first  # the dead one sent nothing more
    finally:
        for proc in (first, second):
            if proc is not None:
                p.stop(proc)


def test_on_sqlite_the_lock_is_a_file_next_to_the_database(settings, tmp_path):
    assert file_lock_path(str(tmp_path / "x.sqlite3")) == tmp_path / "x.sqlite3.beat-lock"
    settings.VAR_DIR = tmp_path
    assert (
        file_lock_path("file:memorydb_default?mode=memory&cache=shared") == tmp_path / "beat.lock"
    )
    if connection.vendor == "sqlite":
        assert isinstance(lock_for_database(), FileLock)


def test_one_file_lock_holder_at_a_time(tmp_path):
    path = tmp_path / "beat-lock"
    first, second = FileLock(path), FileLock(path)
    try:
        assert first.hold()
        assert first.hold()  # still ours
        assert not second.hold()
        assert second.holder().split("@")[0].isdigit()
        first.release()
        assert second.hold()
        path.unlink()  # a lock file removed under its holder is no lock any more
        assert not second.hold()
    finally:
        first.release()
        second.release()
