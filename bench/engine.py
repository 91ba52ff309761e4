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
events (polls separately) and the ratio to the baseline. The flood (posted faster than two cores
deliver) measures throughput; its latency is the age of a backlog, not the product's.

`--rate-fraction 0.5,0.8` then posts the mix at those shares of the flood's delivered rate for
`--rate-seconds` (120) each and prints realtime p50/p95 per share: latency at a sustainable rate.

Targets: >= 300 events/s; realtime p95 <= 0.5 s at low rate; at 80% of the flood's rate realtime
p95 <= 2.5 s (<= 3.5 s for first orders of new contacts); <= 20 calls per 10,000 bulk events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.procstat import cpu_seconds_named, stat_seconds  # noqa: E402  (the checkout first)
from bench.stack import (  # noqa: E402
    MEASURED,
    MemorySampler,
    Stack,
    drop_database,
    latency_report,
    pct,
    setup_environment,
)

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


def rig_cpu(sandbox_pid: int) -> dict[str, float]:
    me = os.times()
    return {
        "postgres": cpu_seconds_named(("postgres",)),
        "redis": cpu_seconds_named(("redis-server",)),
        "sandbox": cpu_seconds([sandbox_pid]),
        "load_generator": me.user + me.system,
    }


def fractions(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def writes_since(op_mark: int, batch_mark: int) -> dict[str, Any]:
    """How the operations created since `op_mark` went (per lane: single calls or imports), and
    the imports submitted since `batch_mark` (per lane and kind: how many, records, seconds from
    submitted to seen finished)."""
    from django.db.models import Avg, Count, F, Sum

    from monitoring.models import DeliveryBatch, Operation

    ops = (
        Operation.objects.filter(pk__gt=op_mark)
        .values("lane", "via")
        .annotate(n=Count("pk"))
        .order_by("lane", "via")
    )
    imports = (
        DeliveryBatch.objects.filter(pk__gt=batch_mark, finished_at__isnull=False)
        .values("lane", "kind")
        .annotate(
            n=Count("pk"),
            records=Sum("records"),
            polls=Sum("polls"),
            seconds=Avg(F("finished_at") - F("submitted_at")),
        )
        .order_by("lane", "kind")
    )
    return {
        "operations": {f"{o['lane']} {o['via'] or 'unsent'}": o["n"] for o in ops},
        "imports": {
            f"{b['lane']} {b['kind']}": {
                "imports": b["n"],
                "records": b["records"],
                "polls": b["polls"],
                "mean_s": round(b["seconds"].total_seconds(), 2) if b["seconds"] else None,
            }
            for b in imports
        },
    }


def table_writes() -> dict[str, tuple[int, int, int, int]]:
    """PostgreSQL's count of rows inserted, updated (HOT among them) and deleted, per table of
    this database, as its statistics hold them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del "
            "FROM pg_stat_user_tables"
        )
        return {name: (ins, upd, hot, dele) for name, ins, upd, hot, dele in cursor.fetchall()}


def writes_per_event(
    before: dict[str, tuple[int, int, int, int]],
    after: dict[str, tuple[int, int, int, int]],
    events: int,
) -> dict[str, Any]:
    """Each table's row writes between two `table_writes` readings, per event (tables with fewer
    than one write in 200 events left out, though counted in the whole)."""
    out: dict[str, Any] = {}
    total = 0
    for name, counts in sorted(after.items()):
        ins, upd, hot, dele = (
            a - b for a, b in zip(counts, before.get(name, (0, 0, 0, 0)), strict=True)
        )
        total += ins + upd + dele
        if (ins + upd + dele) * 200 >= events:
            out[name.removeprefix("monitoring_")] = {
                "inserted": round(ins / events, 2),
                "updated": round(upd / events, 2),
                "hot": round(hot / events, 2),
                "deleted": round(dele / events, 2),
            }
    return {"all_tables": round(total / events, 2), **out}


def at_rate(gen: Any, post: Any, wait_settled: Any, rate: float, seconds: float) -> dict[str, Any]:
    """Post the mix at `rate` events a second for `seconds`; realtime latency of what was posted
    (first orders of contacts new to the run apart: their contact is written first)."""
    from monitoring.models import DeliveryBatch, Operation, SourceEvent

    mark = SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    op_mark = Operation.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    batch_mark = DeliveryBatch.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    started = time.monotonic()
    owed = 0.0
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        owed += rate
        count, owed = int(owed), owed - int(owed)
        if count:
            post(gen.events(count))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    wait_settled(mark)
    phase = SourceEvent.objects.filter(pk__gt=mark)
    known = set(
        SourceEvent.objects.filter(pk__lte=mark, event_type="order.created")
        .exclude(customer_id__isnull=True)
        .values_list("customer_id", flat=True)
        .distinct()
    )
    first: set[int] = set()
    for pk, customer in (
        phase.filter(event_type="order.created").order_by("pk").values_list("pk", "customer_id")
    ):
        if customer and customer not in known:
            known.add(customer)
            first.add(pk)

    def latencies(qs: Any) -> list[float]:
        return [
            (d - o).total_seconds()
            for d, o in qs.filter(state="delivered").values_list("delivered_at", "occurred_at")
        ]

    realtime = latencies(phase.filter(lane="realtime").exclude(pk__in=first))
    firsts = latencies(phase.filter(pk__in=first))
    split = latency_report(
        list(
            phase.filter(lane="realtime", state="delivered")
            .exclude(pk__in=first)
            .values_list("occurred_at", "received_at", "staged_at", "sent_at", "delivered_at")
        )
    )
    return {
        "events_per_s": round(rate, 1),
        "events": phase.count(),
        "realtime_p50_s": round(pct(realtime, 50), 2),
        "realtime_p95_s": round(pct(realtime, 95), 2),
        "realtime_p50_split_s": split["p50_split_s"],
        "realtime_p95_split_s": split["p95_split_s"],
        "first_orders_of_new_contacts_p50_s": round(pct(firsts, 50), 2),
        "first_orders_of_new_contacts_p95_s": round(pct(firsts, 95), 2),
        "writes": writes_since(op_mark, batch_mark),
        "targets": {
            "realtime_p95_le_2_5_s": pct(realtime, 95) <= 2.5,
            "first_orders_p95_le_3_5_s": pct(firsts, 95) <= 3.5,
        },  # fmt: skip
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--low-seconds", type=float, default=120.0)
    parser.add_argument("--low-rate", type=float, default=3.0)
    parser.add_argument("--naive-seconds", type=float, default=120.0)
    parser.add_argument("--settle-timeout", type=float, default=900.0)
    parser.add_argument(
        "--rate-fraction",
        default="",
        help="shares of the flood's delivered rate to post the mix at afterwards, e.g. 0.5,0.8",
    )
    parser.add_argument("--rate-seconds", type=float, default=120.0)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--trace", action="store_true", help="workers log at DEBUG (each lane loop, each call)"
    )
    args = parser.parse_args()

    setup_environment(args.postgres, args.redis, DATABASE)
    try:
        return run(args)
    finally:
        if not args.keep:
            drop_database(args.postgres, DATABASE)


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
    from eventgen import Generator
    from monitoring.models import DeliveryBatch, Operation, SourceEvent

    stack = Stack(tmp, trace=args.trace)
    try:
        stack.start()
        procs, sandbox, dd, run = stack.procs, stack.sandbox, stack.dd, stack.run
        profile = stack.profile
        measured = stack.measured_pids
        gen = Generator(seed=11, customers=args.customers, live=True)
        post = stack.post

        def wait_settled(since_pk: int) -> float:
            return stack.wait_settled(since_pk, args.settle_timeout)

        stand_in = stack.vacuum_stand_in

        stack.warm_up(gen, args.warmup, args.settle_timeout)
        last_pk = SourceEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        calls_before = requests.get(f"{sandbox}/_sandbox/calls", timeout=60).json()["last_id"]
        ops_before = Operation.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

        # Full load, each process's memory sampled through it.
        memory = MemorySampler({n: procs[n].pid for n in MEASURED})
        memory.start()
        cpu0 = cpu_seconds(measured)
        cpu0_by = {n: cpu_seconds([procs[n].pid]) for n in ("web", "realtime", "bulk", "beat")}
        rig0 = rig_cpu(procs["sandbox"].pid)
        writes0 = table_writes()
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
        memory_by = memory.report()
        cpu1 = cpu_seconds(measured)
        cpu_by = {
            n: round(cpu_seconds([procs[n].pid]) - cpu0_by[n], 1)
            for n in ("web", "realtime", "bulk", "beat")
        }
        rig1 = rig_cpu(procs["sandbox"].pid)
        load_full = os.getloadavg()[0]
        full = SourceEvent.objects.filter(pk__gt=last_pk)
        # An idle backend sends its statistics within 10 s (PGSTAT_IDLE_INTERVAL).
        time.sleep(11)
        writes = writes_per_event(writes0, table_writes(), full.count())
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

        # Latency under load, the honest way: the mix posted at shares of the flood's delivered
        # rate (a rate the engine sustains), each for `--rate-seconds`.
        flood_rate = delivered / elapsed if elapsed else 0.0
        rate_phases = {
            f"{round(f * 100)}%": at_rate(
                gen, post, wait_settled, flood_rate * f, args.rate_seconds
            )
            for f in fractions(args.rate_fraction)
        }

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
            # Each process's resident memory through the full load (a worker: its largest pool
            # process); the growth compares the first and last quarter of the samples.
            "memory_during_full_load": memory_by,
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
                # Rows PostgreSQL inserted, updated and deleted per event, by table (its
                # statistics; the warm-up's last writes may be among them).
                "row_writes_per_event": writes,
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
            "at_shares_of_the_flood_rate": rate_phases,
            "naive_baseline": {
                "events_per_s": round(naive_rate, 1),
                "calls_refused": errors,
                "ratio": round(rate / naive_rate, 1) if naive_rate else None,
            },
        }
        print(json.dumps(result, indent=2, default=str))
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
