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
