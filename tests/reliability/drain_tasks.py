"""A slow task that exists only for the SIGTERM drain test, loaded into a real worker with
`celery -A config worker -I tests.reliability.drain_tasks` (production code knows nothing of it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.drain_probe")
def drain_probe(markers: str, label: str) -> None:
    """Mark `<label>.started`, wait until the test writes `release` (at most 60 s), mark `.done`."""
    folder = Path(markers)
    (folder / f"{label}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with (folder / f"{label}.done").open("a") as done:  # one line per run: a rerun shows
        done.write(f"{os.getpid()}\n")
