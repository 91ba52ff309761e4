"""The engine end to end: webhook → staging → planning → DotDigital (the sandbox's realistic
profile) → confirmation, on PostgreSQL and Redis with a realtime and a bulk Celery worker and beat.

    .venv/bin/python bench/engine.py [--events 60000] [--low-seconds 120] [--naive-seconds 120]
    .venv/bin/python bench/engine.py --events 6000 --low-seconds 30 --naive-seconds 20  # quick

It drops and creates its own database, `syncdesk_bench_engine`, on the PostgreSQL server of
`--postgres` (default postgres://postgres@127.0.0.1:5432/postgres), and empties the Redis databases
it uses for the broker and the rate budget (`--redis`, default redis://127.0.0.1:6379, databases 5
and 6), so each run starts fresh. `--keep` leaves the database for inspection afterwards.

The run: 10 s warm-up; `--events` events (the generator's mix: 40% new orders, 15% order
status, 15% dispatches, 5% carrier scans, 10% stock, 5% customers, 5% refunds, 5% consent, over
20,000 customers) posted 100 per request as fast as they are accepted; then `--low-seconds` at 3
realtime events/s; then the naive baseline (one single-record call per event, same profile) for
`--naive-seconds`. Prints delivered events/s, CPU ms per event (the workers' and web's CPU time),
p50/p95 latency per lane (first orders of new contacts separately), API calls per 10,000 bulk
events (polls separately) and the ratio to the baseline. Targets: >= 300 events/s; realtime p95
<= 5 s at full load and <= 0.5 s at low rate; <= 20 calls per 10,000 bulk events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.procstat import stat_seconds  # noqa: E402  (the checkout on the path first)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
PY = sys.executable
DATABASE = "syncdesk_bench_engine"
# What the low-rate phase sends (staging's realtime lane: consent, dispatch, carrier scan, refund,
# new orders; stock to or from zero too, which the generator cannot pick out in advance).
REALTIME_TYPES = {
    "order.created",
    "shipment.dispatched",
    "shipment.carrier_scanned",
    "refund.issued",
    "consent.changed",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes and their children, from /proc (Linux)."""
    total = 0.0
    seen = set()
    queue = list(pids)
    while queue:
        pid = queue.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += stat_seconds(Path(f"/proc/{pid}"))
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            queue.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


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


def rig_cpu(sandbox_pid: int) -> dict[str, float]:
    me = os.times()
    return {
        "postgres": cpu_seconds_named(("postgres",)),
        "redis": cpu_seconds_named(("redis-server",)),
        "sandbox": cpu_seconds([sandbox_pid]),
        "load_generator": me.user + me.system,
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--low-seconds", type=float, default=120.0)
    parser.add_argument("--low-rate", type=float, default=3.0)
    parser.add_argument("--naive-seconds", type=float, default=120.0)
    parser.add_argument("--settle-timeout", type=float, default=900.0)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--trace", action="store_true", help="workers log at DEBUG (each lane loop, each call)"
    )
    args = parser.parse_args()

    server = args.postgres.rsplit("/", 1)[0]
    fresh_database(args.postgres)
    os.environ["DATABASE_URL"] = f"{server}/{DATABASE}"
    os.environ["CELERY_BROKER_URL"] = f"{args.redis}/5"
    os.environ["RATE_BUDGET_REDIS_URL"] = f"{args.redis}/6"
    import redis

    for db in (5, 6):
        redis.Redis.from_url(f"{args.redis}/{db}").flushdb()
    try:
        return run(args)
    finally:
        if not args.keep:
            drop_database(args.postgres)


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def drop_database(url: str) -> None:
    if "django.db" in sys.modules:  # settings read only after DATABASE_URL names the bench's
        from django.db import connections

        connections.close_all()
    with _admin(url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (DATABASE,),
        )
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")


def fresh_database(url: str) -> None:
    drop_database(url)
    with _admin(url) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")


HOT_TABLES = (
    "monitoring_sourceevent",
    "monitoring_operation",
    "monitoring_operationevent",
    "monitoring_deliverybatch",
    "monitoring_listmembership",
    "monitoring_order",
    "monitoring_customer",
)


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


def run(args: argparse.Namespace) -> int:
    tmp = ROOT / "var" / f"bench-engine-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    # One var dir (and so one generated encryption key) for this process and its children.
    os.environ["SYNCDESK_VAR_DIR"] = str(tmp)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Count

    call_command("migrate", verbosity=0)
    from accounts.models import Workspace
    from bench.flows import bench_flows
    from connectors.models import Connection
    from eventgen import Generator
    from monitoring.models import DeliveryBatch, Operation, SourceEvent

    procs: dict[str, subprocess.Popen[bytes]] = {}
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = {**os.environ, "SYNCDESK_VAR_DIR": str(tmp)}
    if args.trace:
        env["LOG_LEVEL"] = "DEBUG"
    try:
        procs["sandbox"] = subprocess.Popen(
            [PY, "-m", "connectors.dotdigital.sandbox", "--port", str(sandbox_port), "--db",
             str(tmp / "dd.sqlite3"), "--profile", "realistic", "--reset"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            try:
                requests.get(f"{sandbox}/_sandbox/health", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        profile = requests.get(f"{sandbox}/_sandbox/profile", timeout=5).json()

        run = str(int(time.time()))
        workspace = Workspace.objects.create(
            name=f"Bench {run}", slug=f"bench-{run}", currency="GBP"
        )
        dd = Connection.objects.create(
            workspace=workspace, kind="dotdigital", name="DotDigital (sandbox)",
            credentials={"api_user": "apiuser-sandbox@apiconnector.com", "password": "sandbox-password"},
            options={"api_endpoint": sandbox, "discovery_url": sandbox},
        )  # fmt: skip
        urls = {
            system: f"http://127.0.0.1:{web_port}{path}"
            for system, path in bench_flows(workspace, dd).items()
        }

        level = "DEBUG" if args.trace else "WARNING"
        bindir = os.path.dirname(PY)
        celery = [os.path.join(bindir, "celery"), "-A", "config"]
        commands = {
            "web": [os.path.join(bindir, "gunicorn"), "config.wsgi", "--bind",
                    f"127.0.0.1:{web_port}", "--workers", "3", "--log-level", "warning"],
            "realtime": [*celery, "worker", "-Q", "realtime", "-n", f"rt{run}@%h", "-c", "3",
                         "--loglevel", level],
            "bulk": [*celery, "worker", "-Q", "bulk", "-n", f"bulk{run}@%h", "-c", "2",
                     "--loglevel", level],
            "beat": [*celery, "beat", "--loglevel", level, "--schedule",
                     str(tmp / "beat-schedule")],
        }  # fmt: skip
        log = (tmp / "processes.log").open("ab")
        for name, argv in commands.items():
            procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        time.sleep(8)
        measured = [procs[n].pid for n in ("web", "realtime", "bulk", "beat")]

        gen = Generator(seed=11, customers=args.customers, live=True)
        session = requests.Session()

        def post(events: list[dict[str, Any]]) -> None:
            # The event happens as it is posted (the generator's clock has whole seconds, and a
            # batch generated ahead would count its wait in this process as latency).
            now = datetime.now(UTC)
            for event in events:
                event["occurred_at"] = now.isoformat().replace("+00:00", "Z")
            for system, url in urls.items():
                mine = [e for e in events if e["source"]["system"] == system]
                if not mine:
                    continue
                for _ in range(20):
                    r = session.post(url, json={"events": mine}, timeout=60)
                    if r.status_code == 202:
                        break
                    time.sleep(0.5)
                else:
                    raise SystemExit(f"the webhook keeps answering {r.status_code}: {r.text[:300]}")

        def settled(since_pk: int) -> bool:
            return not SourceEvent.objects.filter(
                pk__gt=since_pk, state__in=("received", "ready")
            ).exists()

        def wait_settled(since_pk: int) -> float:
            deadline = time.monotonic() + args.settle_timeout
            while time.monotonic() < deadline and not settled(since_pk):
                time.sleep(0.5)
            return time.monotonic()

        # PostgreSQL's autovacuum is off on some machines (this one's service, for one): then a
        # stand-in vacuums and analyzes the engine's tables every minute, as autovacuum would in
        # production (docs: monitoring/migrations/0010_outbox_autovacuum.py). Printed.
        stop_vacuum = threading.Event()
        stand_in = not autovacuum_on()
        if stand_in:
            threading.Thread(target=vacuum_every_minute, args=(stop_vacuum,), daemon=True).start()

        # Warm-up (not measured).
        started = time.monotonic()
        catalogue = gen.catalogue_events()
        for i in range(0, len(catalogue), 100):
            post(catalogue[i : i + 100])
        while time.monotonic() - started < args.warmup:
            post(gen.events(100))
        wait_settled(0)
        last_pk = SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        calls_before = requests.get(f"{sandbox}/_sandbox/calls", timeout=60).json()["last_id"]
        ops_before = Operation.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

        # Full load.
        cpu0 = cpu_seconds(measured)
        cpu0_by = {n: cpu_seconds([procs[n].pid]) for n in ("web", "realtime", "bulk", "beat")}
        rig0 = rig_cpu(procs["sandbox"].pid)
        t0 = time.monotonic()
        load_start = os.getloadavg()[0]
        in_flight = threading.Semaphore(8)

        def post_one(events: list[dict[str, Any]]) -> None:
            try:
                post(events)
            finally:
                in_flight.release()

        with ThreadPoolExecutor(4) as pool:
            futures = []
            for _ in range(args.events // 100):
                in_flight.acquire()
                futures.append(pool.submit(post_one, gen.events(100)))
            for future in futures:
                future.result()
        posted = time.monotonic() - t0
        t1 = wait_settled(last_pk)
        cpu1 = cpu_seconds(measured)
        cpu_by = {
            n: round(cpu_seconds([procs[n].pid]) - cpu0_by[n], 1)
            for n in ("web", "realtime", "bulk", "beat")
        }
        rig1 = rig_cpu(procs["sandbox"].pid)
        load_full = os.getloadavg()[0]
        full = SourceEvent.objects.filter(pk__gt=last_pk)
        delivered = full.filter(state="delivered").count()
        elapsed = t1 - t0
        bulk_events = full.filter(lane="bulk").count()
        sandbox_calls = requests.get(
            f"{sandbox}/_sandbox/calls", params={"after_id": calls_before}, timeout=120
        ).json()["calls"]
        lane_of = dict(
            DeliveryBatch.objects.filter(destination=dd).values_list("import_id", "lane")
        )
        by_tier: dict[str, int] = {}
        imports_by_lane = {"realtime": 0, "bulk": 0}
        for call in sandbox_calls:
            by_tier[call["tier"] or "none"] = by_tier.get(call["tier"] or "none", 0) + 1
            if call["tier"] == "import" and call.get("import"):
                lane = lane_of.get(str(call["import"]["id"]), "bulk")
                imports_by_lane[lane] += 1
        polls = by_tier.get("status", 0)
        # The bulk lane's single calls (list removals): its operations delivered by a single call.
        bulk_singles = Operation.objects.filter(
            destination=dd, pk__gt=ops_before, lane="bulk", via="single"
        ).count()
        bulk_calls = imports_by_lane["bulk"] + bulk_singles

        def latencies(qs: Any) -> list[float]:
            return [
                (d - o).total_seconds()
                for d, o in qs.filter(state="delivered").values_list("delivered_at", "occurred_at")
            ]

        first_orders = set()
        seen_customers: set[int] = set()
        for pk, customer in (
            full.filter(event_type="order.created").order_by("pk").values_list("pk", "customer_id")
        ):
            if customer and customer not in seen_customers:
                seen_customers.add(customer)
                first_orders.add(pk)
        rt_full = latencies(full.filter(lane="realtime").exclude(pk__in=first_orders))
        bulk_full = latencies(full.filter(lane="bulk"))
        first = latencies(full.filter(pk__in=first_orders))

        # Low rate: 3 realtime events a second.
        last_pk = SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        t2 = time.monotonic()
        while time.monotonic() - t2 < args.low_seconds:
            tick = time.monotonic()
            batch = [e for e in gen.events(12) if e["event_type"] in REALTIME_TYPES][:3]
            post(batch)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        wait_settled(last_pk)
        low = SourceEvent.objects.filter(pk__gt=last_pk)
        rt_low = latencies(low.filter(lane="realtime"))
        parts: dict[str, list[float]] = {
            "source": [],
            "queue": [],
            "queue_staging": [],
            "queue_to_send": [],
            "dotdigital": [],
        }
        for o, r, staged, sent, d in low.filter(lane="realtime", state="delivered").values_list(
            "occurred_at", "received_at", "staged_at", "sent_at", "delivered_at"
        ):
            if sent is None or d is None or staged is None:
                continue
            parts["source"].append((r - o).total_seconds())
            parts["queue"].append((sent - r).total_seconds())
            # The queue, split: received → staged (the wake-up and staging), staged → sent
            # (planning, the lane runner's look and its claim).
            parts["queue_staging"].append((staged - r).total_seconds())
            parts["queue_to_send"].append((sent - staged).total_seconds())
            parts["dotdigital"].append((d - sent).total_seconds())

        # The naive baseline: one single-record call per event, same profile, fixed time.
        from connectors.budget import Lane
        from connectors.dotdigital.client import DotDigitalClient
        from connectors.dotdigital.errors import DotDigitalError
        from connectors.dotdigital.types import ContactWrite

        naive = DotDigitalClient.for_connection(dd, lane=Lane.REALTIME, account_key=f"naive:{run}")
        done = errors = 0
        t3 = time.monotonic()
        while time.monotonic() - t3 < args.naive_seconds:
            for event_ in gen.events(100):
                if time.monotonic() - t3 >= args.naive_seconds:
                    break
                email = (event_.get("identity") or {}).get("email") or "naive@example.com"
                try:
                    naive.upsert_contact(ContactWrite(email=email, data_fields={}))
                    done += 1
                except DotDigitalError:
                    errors += 1
                    time.sleep(0.1)
        naive_rate = done / (time.monotonic() - t3)

        rate = delivered / elapsed if elapsed else 0.0
        states = dict(full.values_list("state").annotate(n=Count("pk")))
        result = {
            "assumptions": {
                "sandbox_profile": profile,
                "events": args.events,
                "customers": args.customers,
                "cores": os.cpu_count(),
                "postgres_autovacuum": "on"
                if not stand_in
                else "off on this server: the bench vacuumed and analyzed the engine's tables "
                "every minute in its place",
            },
            "full_load": {
                "accepted_in_s": round(posted, 1),
                "settled_in_s": round(elapsed, 1),
                "states": states,
                "delivered_events_per_s": round(rate, 1),
                "cpu_ms_per_event": round((cpu1 - cpu0) * 1000 / max(1, full.count()), 2),
                "cpu_s_by_process": cpu_by,
                # The rest of the two cores: PostgreSQL (every backend on the server, so run on a
                # quiet one), Redis, the sandbox standing in for DotDigital, and this process.
                "rig_cpu_ms_per_event": {
                    k: round((rig1[k] - rig0[k]) * 1000 / max(1, full.count()), 2) for k in rig0
                },
                "load_average_1m_at_start_and_end": [round(load_start, 1), round(load_full, 1)],
                "realtime_p50_s": round(pct(rt_full, 50), 2),
                "realtime_p95_s": round(pct(rt_full, 95), 2),
                "bulk_p50_s": round(pct(bulk_full, 50), 2),
                "bulk_p95_s": round(pct(bulk_full, 95), 2),
                "first_orders_of_new_contacts_p50_s": round(pct(first, 50), 2),
                "first_orders_of_new_contacts_p95_s": round(pct(first, 95), 2),
                "bulk_events": bulk_events,
                "bulk_lane_calls": {"imports": imports_by_lane["bulk"], "single": bulk_singles},
                "bulk_calls_per_10k_bulk_events_excluding_polls": round(
                    bulk_calls * 10_000 / max(1, bulk_events), 1
                ),
                "realtime_lane_import_calls": imports_by_lane["realtime"],
                "status_polls_all_lanes": polls,
                "status_polls_per_10k_events": round(polls * 10_000 / max(1, full.count()), 1),
                "sandbox_calls_by_tier": by_tier,
                "operations": Operation.objects.filter(destination=dd).count(),
            },
            "low_rate": {
                "realtime_events": len(rt_low),
                "realtime_p50_s": round(pct(rt_low, 50), 3),
                "realtime_p95_s": round(pct(rt_low, 95), 3),
                # source: post → stored; queue: stored → last write sent (staging, planning,
                # waiting); dotdigital: sent → confirmed.
                "realtime_p50_split_s": {k: round(pct(v, 50), 3) for k, v in parts.items()},
                "realtime_p95_split_s": {k: round(pct(v, 95), 3) for k, v in parts.items()},
            },
            "naive_baseline": {
                "events_per_s": round(naive_rate, 1),
                "calls_refused": errors,
                "ratio": round(rate / naive_rate, 1) if naive_rate else None,
            },
        }
        stop_vacuum.set()
        print(json.dumps(result, indent=2, default=str))
        return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
