"""One beat at a time: django-celery-beat's DatabaseScheduler behind a lock.

A second `celery -A config beat` started by mistake (a second machine, a restarted unit whose old
process lingers) must not send every schedule twice. `SingleBeatScheduler` holds a lock while it
sends; another beat finds the lock taken, stays on **standby** (it reads and writes nothing, sends
nothing, says so in its log) and tries again every `standby_interval` seconds, so it takes over when
the holder stops or dies.

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection of its own,
  which no request or task shares. The server releases it when the session ends, a killed beat
  included. Before each pass the holder checks that its session still holds it (a dropped
  connection, a terminated backend) and goes back to standby if not. It needs session pooling: behind
  PgBouncer in transaction mode point beat at the server itself.
- SQLite (one machine by nature): an exclusive `flock` on a file next to the database file
  (`<database>.beat-lock`); the kernel releases it when the process dies, however it dies.

Schedules are loaded from the database when the lock is taken, not before, so a beat that takes
over starts from what the last holder saved (it saves every few minutes and when it stops; a
SIGKILLed holder may leave an entry due again once).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

# pg_try_advisory_lock(int, int): one lock per database, named "SYNC" "BEAT" in ASCII.
ADVISORY_KEY = (0x53594E43, 0x42454154)


class BeatLock(Protocol):
    description: str

    def hold(self) -> bool:
        """Take the lock if it is free, or confirm it is still ours; True while we hold it."""

    def holder(self) -> str:
        """Who holds the lock, as far as can be told (for the standby's log line)."""

    def release(self) -> None: ...


class FileLock:
    """An exclusive flock on a file: released by the kernel when its holder exits or dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file lock {path}"
        self._fd: int | None = None

    def hold(self) -> bool:
        if self._fd is not None:
            try:  # the file replaced or deleted under us means another beat can lock the new one
                if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                    return True
            except OSError:
                pass
            logger.warning("beat: %s was removed or replaced", self.path)
            self.release()
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection of its own."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.description = "PostgreSQL advisory lock ({}, {})".format(*ADVISORY_KEY)
        self._db: BaseDatabaseWrapper | None = None
        self._held = False

    def _cursor(self) -> Any:
        if self._db is None:
            # Not registered in django.db.connections: close_old_connections() never closes it.
            self._db = connections.create_connection(self.alias)
        return self._db.cursor()

    def hold(self) -> bool:
        try:
            with self._cursor() as cursor:
                if self._held:  # still ours? (the session may have been ended under us)
                    cursor.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND classid = %s AND objid = %s AND objsubid = 2 AND granted"
                        " AND pid = pg_backend_pid()",
                        ADVISORY_KEY,
                    )
                    self._held = cursor.fetchone()[0] == 1
                    if not self._held:
                        logger.warning("beat: the advisory lock's session no longer holds it")
                else:
                    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", ADVISORY_KEY)
                    self._held = bool(cursor.fetchone()[0])
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("beat: the lock's database connection failed: %s", exc)
            self.release()
        return self._held

    def holder(self) -> str:
        try:
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT a.pid, coalesce(host(a.client_addr), 'local'), a.application_name"
                    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s"
                    " AND l.objsubid = 2 AND l.granted",
                    ADVISORY_KEY,
                )
                row = cursor.fetchone()
        except (DatabaseError, InterfaceError):
            return "unknown"
        return f"backend pid {row[0]} from {row[1]} {row[2]}".strip() if row else "nobody now"

    def release(self) -> None:
        self._held = False
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(DatabaseError, InterfaceError):
                db.close()  # ending the session releases its advisory locks


def lock_for_database(alias: str = "default") -> BeatLock:
    """The lock that fits the database beat reads its schedules from."""
    db = settings.DATABASES[alias]
    if db["ENGINE"].endswith("postgresql"):
        return AdvisoryLock(alias)
    return FileLock(file_lock_path(str(db["NAME"])))


def file_lock_path(database_name: str) -> Path:
    """Next to the SQLite file (one lock per database); in var/ for an in-memory one (tests)."""
    if database_name and not database_name.startswith("file:") and database_name != ":memory:":
        return Path(database_name).with_name(Path(database_name).name + ".beat-lock")
    return Path(settings.VAR_DIR) / "beat.lock"


class SingleBeatScheduler(DatabaseScheduler):  # type: ignore[misc] # django-celery-beat is untyped
    """DatabaseScheduler that sends only while it holds the beat lock (module docstring)."""

    #: Seconds between a standby's attempts to take the lock: how long a dead holder goes unreplaced.
    standby_interval = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock = lock_for_database()
        self._holding = False
        self._loaded = False
        self._said_standby = False
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        # Deferred to the first tick that holds the lock: a standby touches no schedule row.
        pass

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lock.hold():
            if self._holding:
                logger.warning("beat: lost the %s; standby, sending nothing", self.lock.description)
                self._forget_schedule()
            elif not self._said_standby:
                logger.warning(
                    "beat: standby: the %s is held by %s; sending nothing, retrying every %ss",
                    self.lock.description,
                    self.lock.holder(),
                    self.standby_interval,
                )
            self._holding, self._said_standby = False, True
            return self.standby_interval
        if not self._holding:
            logger.warning("beat: took the %s; sending schedules", self.lock.description)
            self._holding, self._said_standby = True, False
        if not self._loaded:
            super().setup_schedule()  # reads the schedule from the database, as the last holder left it
            self._loaded = True
        return float(super().tick(*args, **kwargs))

    def _forget_schedule(self) -> None:
        """Drop what was read, so a later takeover reads the schedule afresh."""
        self._dirty.clear()
        self._schedule = None
        self._heap = None
        self._initial_read = True
        self._loaded = False

    def sync(self) -> None:
        if self._holding:  # a standby has nothing to save, and must not overwrite the holder's
            super().sync()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()
            self._holding = False
