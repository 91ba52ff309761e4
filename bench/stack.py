"""The engine benches' stack: the sandbox (realistic profile), web (gunicorn, 3 workers), a
realtime worker (-c 3), a bulk worker (-c 2) and beat, on PostgreSQL and Redis, with the bench
flows of one workspace; and posting the generator's events to their webhooks as they happen.

Used by bench/engine.py and bench/priority.py. Call `setup_environment` before Django is set up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MEASURED = ("web", "realtime", "bulk", "beat")
HOT_TABLES = (
    "monitoring_sourceevent",
    "monitoring_operation",
    "monitoring_operationevent",
    "monitoring_deliverybatch",
    "monitoring_listmembership",
    "monitoring_order",
    "monitoring_customer",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sandbox(
    port: int, var: Path, profile: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The DotDigital sandbox on `port` (its state in `var`), answering once this returns."""
    process = subprocess.Popen(
        [PY, "-m", "connectors.dotdigital.sandbox", "--port", str(port), "--db",
         str(var / "dd.sqlite3"), "--profile", profile, "--reset"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    return process


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def latency_report(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """p50/p95/max from the event to delivered, and p50/p95 of each stage."""
    total: list[float] = []
    parts: dict[str, list[float]] = {"source": [], "staging": [], "to_send": [], "dotdigital": []}
    for occurred, received, staged, sent, delivered in rows:
        if staged is None or sent is None or delivered is None:
            continue
        total.append((delivered - occurred).total_seconds())
        parts["source"].append((received - occurred).total_seconds())
        parts["staging"].append((staged - received).total_seconds())
        parts["to_send"].append((sent - staged).total_seconds())
        parts["dotdigital"].append((delivered - sent).total_seconds())
    return {
        "events": len(total),
        "p50_s": round(pct(total, 50), 3),
        "p95_s": round(pct(total, 95), 3),
        "max_s": round(max(total, default=float("nan")), 3),
        "p50_split_s": {k: round(pct(v, 50), 3) for k, v in parts.items()},
        "p95_split_s": {k: round(pct(v, 95), 3) for k, v in parts.items()},
    }


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def drop_database(url: str, database: str) -> None:
    if "django.db" in sys.modules:  # settings read only after DATABASE_URL names the bench's
        from django.db import connections

        connections.close_all()
    with _admin(url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        conn.execute(f"DROP DATABASE IF EXISTS {database}")


def setup_environment(postgres: str, redis_url: str, database: str) -> None:
    """A fresh database and empty Redis databases (broker 5, rate budget 6) for this run."""
    import redis

    drop_database(postgres, database)
    with _admin(postgres) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    server = postgres.rsplit("/", 1)[0]
    os.environ["DATABASE_URL"] = f"{server}/{database}"
    os.environ["CELERY_BROKER_URL"] = f"{redis_url}/5"
    os.environ["RATE_BUDGET_REDIS_URL"] = f"{redis_url}/6"
    for db in (5, 6):
        redis.Redis.from_url(f"{redis_url}/{db}").flushdb()


def autovacuum_on() -> bool:
    with _admin(os.environ["DATABASE_URL"]) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    return bool(row and row[0] == "on")


def vacuum_every_minute(stop: threading.Event) -> None:
    """The stand-in for autovacuum (naptime 1 min) when the server runs without it."""
    import psycopg

    while not stop.wait(60):
        try:
            with _admin(os.environ["DATABASE_URL"]) as conn:
                for table in HOT_TABLES:
                    conn.execute(f"VACUUM (ANALYZE) {table}")
        except psycopg.Error:  # the run is ending (its database going)
            return


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a Celery worker's pool processes, gunicorn's workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            queue.extend(
                int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            )
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def status_mb(pid: int, field: str) -> float:
    """A /proc/<pid>/status memory figure (VmRSS, VmHWM: the peak) in MB; 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


class MemorySampler(threading.Thread):
    """Each role's resident memory every `every` seconds while it runs: the largest process of
    its tree (a pool process is what grows), and at the end the largest peak (VmHWM) in it."""

    def __init__(self, pids: dict[str, int], every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples: dict[str, list[float]] = {name: [] for name in pids}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, pid in self.pids.items():
                tree = process_tree(pid)
                self.samples[name].append(max(status_mb(p, "VmRSS") for p in tree))
            self.halt.wait(self.every)

    def report(self) -> dict[str, dict[str, float]]:
        """Per role: peak RSS, and the mean of the first and last quarter of the samples with
        the growth between them (a leak shows as growth on a long run)."""
        self.halt.set()
        out = {}
        for name, pid in self.pids.items():
            samples = self.samples[name]
            quarter = max(1, len(samples) // 4)
            first = sum(samples[:quarter]) / quarter if samples else 0.0
            last = sum(samples[-quarter:]) / quarter if samples else 0.0
            out[name] = {
                "peak_rss_mb": round(max(status_mb(p, "VmHWM") for p in process_tree(pid)), 1),
                "rss_first_quarter_mb": round(first, 1),
                "rss_last_quarter_mb": round(last, 1),
                "growth_pct": round((last - first) * 100 / first, 1) if first else 0.0,
            }
        return out


@dataclass
class Stack:
    """The processes of one run, the bench flows' webhook URLs and the sandbox's URL."""

    tmp: Path
    trace: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    sandbox: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    run: str = ""
    dd: Any = None
    session: requests.Session = field(default_factory=requests.Session)
    stop_vacuum: threading.Event = field(default_factory=threading.Event)
    vacuum_stand_in: bool = False

    def start(self) -> Stack:
        """Start the sandbox, create the workspace and its flows, start web, workers and beat.
        Django must be set up (and migrated) in this process."""
        from accounts.models import Workspace
        from bench.flows import bench_flows
        from connectors.models import Connection

        sandbox_port, web_port = free_port(), free_port()
        self.sandbox = f"http://127.0.0.1:{sandbox_port}"
        env = {**os.environ, "SYNCDESK_VAR_DIR": str(self.tmp)}
        if self.trace:
            env["LOG_LEVEL"] = "DEBUG"
        self.procs["sandbox"] = start_sandbox(sandbox_port, self.tmp, "realistic", env)
        self.profile = requests.get(f"{self.sandbox}/_sandbox/profile", timeout=5).json()

        self.run = run = str(int(time.time()))
        workspace = Workspace.objects.create(
            name=f"Bench {run}", slug=f"bench-{run}", currency="GBP"
        )
        self.dd = Connection.objects.create(
            workspace=workspace, kind="dotdigital", name="DotDigital (sandbox)",
            credentials={"api_user": "apiuser-sandbox@apiconnector.com", "password": "sandbox-password"},
            options={"api_endpoint": self.sandbox, "discovery_url": self.sandbox},
        )  # fmt: skip
        self.urls = {
            system: f"http://127.0.0.1:{web_port}{path}"
            for system, path in bench_flows(workspace, self.dd).items()
        }
        level = "DEBUG" if self.trace else "WARNING"
        bindir = os.path.dirname(PY)
        celery = [os.path.join(bindir, "celery"), "-A", "config"]
        commands = {
            "web": [os.path.join(bindir, "gunicorn"), "config.wsgi", "--bind",
                    f"127.0.0.1:{web_port}", "--workers", "3", "--log-level", "warning"],
            "realtime": [*celery, "worker", "-Q", "realtime", "-n", f"rt{run}@%h", "-c", "3",
                         "--loglevel", level],
            # Nice 10, as docs/architecture.md advises deploying it: throughput work yields the
            # CPU to the realtime worker and the webhook.
            "bulk": ["nice", "-n", "10", *celery, "worker", "-Q", "bulk", "-n", f"bulk{run}@%h",
                     "-c", "2", "--loglevel", level],
            "beat": [*celery, "beat", "--loglevel", level, "--schedule",
                     str(self.tmp / "beat-schedule")],
        }  # fmt: skip
        log = (self.tmp / "processes.log").open("ab")
        for name, argv in commands.items():
            # Each process names itself to PostgreSQL (pg_stat_activity, lock waits in its log).
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, env={**env, "PGAPPNAME": f"syncdesk-{name}"}, stdout=log, stderr=log
            )
        time.sleep(8)
        # PostgreSQL's autovacuum is off on some machines (this one's service, for one): then a
        # stand-in vacuums and analyzes the engine's tables every minute, as autovacuum would in
        # production (docs: monitoring/migrations/0010_outbox_autovacuum.py). Printed.
        self.vacuum_stand_in = not autovacuum_on()
        if self.vacuum_stand_in:
            threading.Thread(
                target=vacuum_every_minute, args=(self.stop_vacuum,), daemon=True
            ).start()
        return self

    @property
    def measured_pids(self) -> list[int]:
        return [self.procs[n].pid for n in MEASURED]

    def post(self, events: list[dict[str, Any]]) -> None:
        """POST events to their systems' webhooks. The event happens as it is posted (the
        generator's clock has whole seconds, and a batch generated ahead would count its wait in
        this process as latency)."""
        now = datetime.now(UTC)
        for event in events:
            event["occurred_at"] = now.isoformat().replace("+00:00", "Z")
        for system, url in self.urls.items():
            mine = [e for e in events if e["source"]["system"] == system]
            if not mine:
                continue
            for _ in range(20):
                r = self.session.post(url, json={"events": mine}, timeout=60)
                if r.status_code == 202:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"the webhook keeps answering {r.status_code}: {r.text[:300]}")

    def warm_up(self, gen: Any, seconds: float, timeout: float) -> None:
        """Not measured: the catalogue and opening stock, then the generator's mix for `seconds`,
        until everything is settled."""
        started = time.monotonic()
        catalogue = gen.catalogue_events()
        for i in range(0, len(catalogue), 100):
            self.post(catalogue[i : i + 100])
        while time.monotonic() - started < seconds:
            self.post(gen.events(100))
        self.wait_settled(0, timeout)

    def wait_settled(self, since_pk: int, timeout: float) -> float:
        """Until no event after `since_pk` is waiting to be staged or delivered; the time then."""
        from monitoring.models import SourceEvent

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not SourceEvent.objects.filter(
                pk__gt=since_pk, state__in=("received", "ready")
            ).exists():
                break
            time.sleep(0.5)
        return time.monotonic()

    def stop(self) -> None:
        self.stop_vacuum.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def last_event_pk() -> int:
    from monitoring.models import SourceEvent

    return SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
