"""The engine end to end: webhook → staging → planning → DotDigital (the sandbox's realistic
profile) → confirmation, on PostgreSQL and Redis with a realtime and a bulk Celery worker and beat.

    dropdb --if-exists -h 127.0.0.1 -U postgres syncdesk_bench_engine  # a fresh database each run
    createdb -h 127.0.0.1 -U postgres syncdesk_bench_engine
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/syncdesk_bench_engine \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/5 RATE_BUDGET_REDIS_URL=redis://127.0.0.1:6379/6 \\
        .venv/bin/python bench/engine.py [--events 60000] [--low-seconds 120] [--naive-seconds 120]

The run (issue 6): 10 s warm-up; `--events` events (the generator's mix: 40% new orders, 15% order
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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
PY = sys.executable
REALTIME_TYPES = {"order.created", "shipment.dispatched", "shipment.carrier_scanned"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes and their children, from /proc (Linux)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    seen = set()
    queue = list(pids)
    while queue:
        pid = queue.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            queue.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


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
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("set DATABASE_URL to a scratch PostgreSQL database")
        return 2

    tmp = ROOT / "var" / f"bench-engine-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    # One var dir (and so one generated encryption key) for this process and its children.
    os.environ["SYNCDESK_VAR_DIR"] = str(tmp)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Count, Sum

    call_command("migrate", verbosity=0)
    from accounts.models import Workspace
    from connectors.models import Connection
    from eventgen import Generator
    from monitoring.models import Flow, SourceEvent
    from monitoring.outbox import DeliveryBatch, Operation
    from monitoring.pipeline.flows import install_defaults, mark_backfill_complete

    procs: dict[str, subprocess.Popen[bytes]] = {}
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = {**os.environ, "SYNCDESK_VAR_DIR": str(tmp)}
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
        urls = {}
        for system, join in (("demo-erp", "order_number"), ("demo-wms", "channel_order_ref")):
            source = Connection.objects.create(workspace=workspace, kind="canonical", name=system)
            token = source.rotate_webhook_token()
            flow = Flow.objects.create(
                workspace=workspace, name=system, source=source, destination=dd, join_key=join
            )
            install_defaults(flow)
            mark_backfill_complete(flow, by="bench")
            urls[system] = f"http://127.0.0.1:{web_port}/hooks/{token}/"

        bindir = os.path.dirname(PY)
        celery = [os.path.join(bindir, "celery"), "-A", "config"]
        commands = {
            "web": [os.path.join(bindir, "gunicorn"), "config.wsgi", "--bind",
                    f"127.0.0.1:{web_port}", "--workers", "3", "--log-level", "warning"],
            "realtime": [*celery, "worker", "-Q", "realtime", "-n", f"rt{run}@%h", "-c", "2",
                         "--loglevel", "WARNING"],
            "bulk": [*celery, "worker", "-Q", "bulk", "-n", f"bulk{run}@%h", "-c", "2",
                     "--loglevel", "WARNING"],
            "beat": [*celery, "beat", "--loglevel", "WARNING", "--schedule",
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
            for system, url in urls.items():
                mine = [e for e in events if e["source"]["system"] == system]
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

        # Warm-up (not measured).
        started = time.monotonic()
        catalogue = gen.catalogue_events()
        for i in range(0, len(catalogue), 100):
            post(catalogue[i : i + 100])
        while time.monotonic() - started < args.warmup:
            post(gen.events(100))
        wait_settled(0)
        last_pk = SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        calls_before = len(requests.get(f"{sandbox}/_sandbox/calls", timeout=60).json()["calls"])

        # Full load.
        cpu0 = cpu_seconds(measured)
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, (gen.events(100) for _ in range(args.events // 100))))
        posted = time.monotonic() - t0
        t1 = wait_settled(last_pk)
        cpu1 = cpu_seconds(measured)
        full = SourceEvent.objects.filter(pk__gt=last_pk)
        delivered = full.filter(state="delivered").count()
        elapsed = t1 - t0
        batches = DeliveryBatch.objects.filter(
            destination=dd, submitted_at__gte=full.order_by("pk").values("received_at")[:1]
        )
        bulk_events = full.filter(lane="bulk").count()
        bulk_imports = batches.filter(lane="bulk").count()
        polls = batches.aggregate(n=Sum("polls"))["n"] or 0
        sandbox_calls = requests.get(f"{sandbox}/_sandbox/calls", timeout=120).json()["calls"][
            calls_before:
        ]
        by_tier: dict[str, int] = {}
        for call in sandbox_calls:
            by_tier[call["tier"] or "none"] = by_tier.get(call["tier"] or "none", 0) + 1

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

        # The naive baseline: one single-record call per event, same profile, fixed time.
        from connectors.budget import Lane
        from connectors.dotdigital.client import DotDigitalClient
        from connectors.dotdigital.errors import DotDigitalError
        from connectors.dotdigital.types import ContactWrite

        naive = DotDigitalClient.for_connection(dd, lane=Lane.REALTIME, account_key=f"naive:{run}")
        done = 0
        t3 = time.monotonic()
        naive_events = gen.events(100_000)
        for event_ in naive_events:
            if time.monotonic() - t3 >= args.naive_seconds:
                break
            email = (event_.get("identity") or {}).get("email") or "naive@example.com"
            try:
                naive.upsert_contact(ContactWrite(email=email, data_fields={}))
                done += 1
            except DotDigitalError:
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
            },
            "full_load": {
                "accepted_in_s": round(posted, 1),
                "settled_in_s": round(elapsed, 1),
                "states": states,
                "delivered_events_per_s": round(rate, 1),
                "cpu_ms_per_event": round((cpu1 - cpu0) * 1000 / max(1, full.count()), 2),
                "realtime_p50_s": round(pct(rt_full, 50), 2),
                "realtime_p95_s": round(pct(rt_full, 95), 2),
                "bulk_p50_s": round(pct(bulk_full, 50), 2),
                "bulk_p95_s": round(pct(bulk_full, 95), 2),
                "first_orders_of_new_contacts_p50_s": round(pct(first, 50), 2),
                "first_orders_of_new_contacts_p95_s": round(pct(first, 95), 2),
                "bulk_import_calls_per_10k_bulk_events": round(
                    bulk_imports * 10_000 / max(1, bulk_events), 1
                ),
                "status_polls": polls,
                "sandbox_calls_by_tier": by_tier,
                "operations": Operation.objects.filter(destination=dd).count(),
            },
            "low_rate": {
                "realtime_events": len(rt_low),
                "realtime_p50_s": round(pct(rt_low, 50), 3),
                "realtime_p95_s": round(pct(rt_low, 95), 3),
            },
            "naive_baseline": {
                "events_per_s": round(naive_rate, 1),
                "ratio": round(rate / naive_rate, 1) if naive_rate else None,
            },
        }
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
