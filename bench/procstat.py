"""CPU time from /proc (Linux), for the benches' per-event CPU figures."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat_seconds(proc: Path, *, reaped: bool = False) -> float:
    """utime + stime of the process at `proc` (`/proc/<pid>`), and with `reaped` also that of its
    children already gone and waited for. Raises FileNotFoundError once it has gone itself."""
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11 : 15 if reaped else 13]) / TICK


def cpu_seconds_named(names: tuple[str, ...]) -> float:
    """CPU time of every process whose command name is one of `names` (the PostgreSQL server's
    backends, Redis): the rig's share of the two cores, printed beside ours."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in names:
                continue
            # Own time, and that of children already gone (backends of closed connections).
            total += stat_seconds(entry, reaped=True)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total
