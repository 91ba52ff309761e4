"""Where an event's milliseconds go: bench/engine.py under a sampling profiler, with PostgreSQL's
statement statistics.

    .venv/bin/python bench/event_cost.py [--events 20000] [--out DIR] [any other bench/engine.py option]

Runs `bench/engine.py` (by default `--events 20000 --low-seconds 10 --naive-seconds 5`) and
records every Python process of its web, realtime and bulk workers with py-spy (a dev dependency),
keeping only samples that hold the GIL: Python's own CPU, not a wait for PostgreSQL, a lock or the
network. When the server has `pg_stat_statements` loaded (`shared_preload_libraries`: the bench
does not change the server's settings), its statistics are reset first and read afterwards.

It prints the engine's figures (delivered events/s; CPU ms an event of each process and of
PostgreSQL), then each process's CPU an event split by the engine's stage (intake, staging,
planning, sending, confirming) and by whose code runs (ours, Django's ORM, psycopg, JSON, Celery,
HTTP), each process's full-load CPU shared out by its samples (which cover the whole run: the
full load is most of it); then PostgreSQL's statement time an event by statement and table, lock
waits apart. Statement time is wall time inside PostgreSQL: what a statement waited for counts,
which is why the lock waits are shown apart. The raw profiles (`py-spy`'s collapsed stacks) and
the statements stay in `--out`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.stack import process_tree  # noqa: E402

# A process of the stack, by what its command line holds.
PROCESSES = {
    "web": "gunicorn config.wsgi",
    "realtime": "worker -Q realtime",
    "bulk": "worker -Q bulk",
}
# The engine's stages, by the first of these functions a sample's stack holds.
STAGES = (
    ("record_results", "confirming: recording outcomes"),
    ("finish_batch", "confirming: an import's end"),
    ("run_confirmation", "confirming: polls"),
    ("plan_batch", "planning"),
    ("plan_after_staging", "planning"),
    ("run_planning", "planning"),
    ("stage_batch", "staging"),
    ("_stage_all", "staging"),
    ("run_staging", "staging: claims and loop"),
    ("send_operations", "sending: calls"),
    ("_send_claim", "sending: claims and loop"),
    ("send_due", "sending: claims and loop"),
    ("run_lane", "lane loop"),
    ("serve_lane", "lane loop"),
    ("WSGIHandler", "intake: webhook requests"),
    ("trace_task", "Celery: task"),
    ("Consumer.start", "Celery: consumer"),
    ("Worker.workloop", "Celery: pool"),
)
# Whose code a sample is in: its innermost frame's package, else the nearest library frame above
# it before one of ours.
LIBRARIES = (
    ("psycopg/", "psycopg"),
    ("django/db/", "Django ORM"),
    ("django/", "Django"),
    ("json/", "JSON"),
    ("redis/", "Redis client"),
    ("http/client", "HTTP"),
    ("urllib3", "HTTP"),
    ("requests/", "HTTP"),
    ("kombu", "Celery"),
    ("celery/", "Celery"),
    ("billiard", "Celery"),
)
OURS = re.compile(r"\((monitoring|connectors|config|accounts|api|exceptions_inbox|outbound)/")


def find_processes(root: int, timeout: float = 300.0) -> dict[str, int]:
    """The topmost process of each of the stack's web and workers under `root` (they start once
    the bench has created and migrated its database: a minute or more on a slow machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: dict[str, int] = {}
        for pid in process_tree(root):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            for name, marker in PROCESSES.items():
                if marker in cmdline and name not in found:
                    found[name] = pid  # process_tree lists a parent before its children
        if len(found) == len(PROCESSES):
            return found
        time.sleep(0.5)
    raise SystemExit(f"the stack's processes did not start within {timeout:.0f} s")


def classify(frames: list[str]) -> tuple[str, str]:
    stage = next((name for key, name in STAGES if any(key in f for f in frames)), "other")
    for frame in reversed(frames):
        hit = next((name for key, name in LIBRARIES if key in frame), None)
        if hit:
            return stage, hit
        if OURS.search(frame):
            return stage, "ours"
    return stage, "other (gunicorn, the standard library)"


def split(collapsed: Path, cpu_seconds: float, events: int) -> dict[str, Any]:
    """A process's CPU ms an event by stage and, within each, by whose code."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack:
            counts[classify(stack.split(";"))] += int(samples)
    total = sum(counts.values()) or 1
    ms = cpu_seconds * 1000 / max(events, 1) / total
    stages: dict[str, dict[str, float]] = collections.defaultdict(dict)
    by_whose: collections.Counter[str] = collections.Counter()
    for (stage, whose), count in counts.most_common():
        stages[stage][whose] = round(count * ms, 3)
        by_whose[whose] += count
    return {
        "samples": total,
        "cpu_ms_per_event": round(cpu_seconds * 1000 / max(events, 1), 3),
        "by_whose_code": {k: round(n * ms, 3) for k, n in by_whose.most_common()},
        "by_stage": dict(
            sorted(
                ((k, {"total": round(sum(v.values()), 3), **v}) for k, v in stages.items()),
                key=lambda kv: -kv[1]["total"],
            )
        ),
    }


def statement_class(query: str) -> str:
    q = query.lstrip()
    if "pg_advisory" in q:
        return "waiting: advisory locks (planning, one per key)"
    if "FOR UPDATE" in q and "SKIP LOCKED" not in q:
        table = re.search(r'FROM "(\w+)"', q)
        return (
            f"waiting: row locks, {table.group(1) if table else '?'} (time spent waiting included)"
        )
    if "FOR KEY SHARE" in q:
        return "foreign-key checks (triggers)"
    if q.startswith(("VACUUM", "ANALYZE")):
        return "vacuum and analyze (the bench's, in autovacuum's place)"
    if "SKIP LOCKED" in q:
        table = re.search(r'"(monitoring_\w+)"', q)
        return f"claims: {table.group(1) if table else '?'}"
    verb = q.split(None, 1)[0].upper()
    table = re.search(r'(?:INTO|UPDATE|FROM) "(\w+)"', q)
    return f"{verb} {table.group(1) if table else '?'}"


def statements(postgres: str) -> list[tuple[int, float, str]] | None:
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as conn:
        loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        if not loaded or "pg_stat_statements" not in loaded[0]:
            return None
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return [
            (calls, ms, query)
            for calls, ms, query in conn.execute(
                "SELECT calls, total_exec_time, query FROM pg_stat_statements"
            )
        ]


def reset_statements(postgres: str) -> bool:
    import psycopg

    if statements(postgres) is None:
        return False
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples a second")
    args, engine_args = parser.parse_known_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: `make venv-dev` installs it")
    out = args.out or ROOT / "var" / f"bench-event-cost-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    for option, value in (("--low-seconds", "10"), ("--naive-seconds", "5")):
        if option not in engine_args:
            engine_args += [option, value]
    with_statements = reset_statements(args.postgres)

    command = [sys.executable, str(ROOT / "bench" / "engine.py"), "--events", str(args.events)]
    command += ["--postgres", args.postgres, *engine_args]
    with (out / "engine.json").open("w") as stdout:
        engine = subprocess.Popen(command, stdout=stdout, cwd=ROOT)
        spies = []
        for name, pid in find_processes(engine.pid).items():
            spies.append(
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--subprocesses",
                        "--gil",
                        "--nonblocking",
                        "--rate",
                        str(args.rate),
                        "--format",
                        "raw",
                        "--output",
                        str(out / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        code = engine.wait()
        for spy in spies:  # each stops once its process has exited, and writes its samples
            spy.wait(timeout=120)
    if code:
        raise SystemExit(f"bench/engine.py exited with {code}")
    result = json.loads((out / "engine.json").read_text())
    full = result["full_load"]
    events = sum(full["states"].values())
    report: dict[str, Any] = {
        "events": events,
        "delivered_events_per_s": full["delivered_events_per_s"],
        "cpu_ms_per_event": {
            "ours": full["cpu_ms_per_event"],
            **{
                name: round(seconds * 1000 / events, 3)
                for name, seconds in full["cpu_s_by_process"].items()
            },
            **full["rig_cpu_ms_per_event"],
        },
        "processes": {
            name: split(out / f"{name}.txt", full["cpu_s_by_process"][name], events)
            for name in PROCESSES
            if (out / f"{name}.txt").exists()
        },
    }
    rows = statements(args.postgres) if with_statements else None
    if rows is None:
        report["postgresql"] = "pg_stat_statements is not loaded: no statement statistics"
    else:
        (out / "statements.json").write_text(json.dumps(rows))
        by: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
        for calls, ms, query in rows:
            entry = by[statement_class(query)]
            entry[0] += calls
            entry[1] += ms
        report["postgresql"] = {
            "statement_ms_per_event": round(sum(v[1] for v in by.values()) / events, 3),
            "by_statement": {
                name: {"calls": int(calls), "ms_per_event": round(ms / events, 3)}
                for name, (calls, ms) in sorted(by.items(), key=lambda kv: -kv[1][1])
                if ms / events >= 0.005
            },
        }
    report["out"] = str(out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
