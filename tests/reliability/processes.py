"""Real `celery -A config …` processes for the reliability tests: started with their own var/ folder
(kombu's filesystem broker in it) and database, logging to a file, always stopped by the caller."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

CELERY = str(Path(sys.executable).with_name("celery"))


def celery_env(var_dir: Path, database_url: str = "") -> dict[str, str]:
    """The environment of a Syncdesk process on the filesystem broker under `var_dir`."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SYNCDESK_VAR_DIR": str(var_dir),
        "CELERY_BROKER_URL": "filesystem://",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REMAP_SIGTERM", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`celery -A config <args>` from the project's directory, its output in `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [CELERY, "-A", "config", *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole, never by our Ctrl-C
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL of its whole process group if it does not exit within 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):  # the group: pool children outliving their parent
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll `check` until true; fail naming `what` after `seconds`: a bound, not a timing claim
    (process start-ups get 90 s: a loaded CI machine took over 40 s to start a worker)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.1)


def read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def queued(var_dir: Path, queue: str) -> list[dict[str, object]]:
    """The messages waiting in one queue of the filesystem broker under `var_dir`, oldest first."""
    folder = var_dir / "broker" / "queue"
    messages = []
    for path in sorted(folder.glob(f"*.{queue}.msg")):
        try:
            messages.append(json.loads(path.read_bytes()))
        except (OSError, ValueError):  # taken or still being written meanwhile
            continue
    return messages


def origin_pid(message: dict[str, object]) -> int:
    """The process that sent a task message (protocol 2's `origin` header: gen<pid>@<host>)."""
    headers = message["headers"]
    assert isinstance(headers, dict)
    return int(str(headers["origin"]).split("@", 1)[0].removeprefix("gen"))
