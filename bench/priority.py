"""Realtime stays realtime while a bulk backlog drains: the engine bench's stack (bench/stack.py:
PostgreSQL, Redis, the sandbox's realistic profile, gunicorn 3, a realtime worker -c 3, a bulk
worker -c 2, beat) on a quiet machine.

    .venv/bin/python bench/priority.py [--backlog 20000] [--alone-seconds 60] [--rate 3]

The run: a warm-up (the catalogue and `--warmup` seconds of the ordinary mix); `--alone-seconds`
of realtime events (new orders, dispatches, carrier scans, refunds, consent) at `--rate` a second;
then a bulk backlog of `--backlog` events (order status changes, stock, customer updates) posted as
fast as the webhook accepts them while the realtime stream goes on until the backlog has drained;
then a backlog of the same size with no stream, for the bulk rate alone.

Prints realtime p50/p95/max alone and during the backlog (from the event to delivered), their split
by stage (source: occurred → received; staging: received → staged; to_send: staged → sent;
dotdigital: sent → delivered), the backlog's drain time and bulk events/s with and without the
stream. Targets: realtime p95 during the backlog <= 1.0 s and <= 2x the p95 alone; the bulk rate
with the stream >= 70% of the rate without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.stack import (  # noqa: E402
    Stack,
    drop_database,
    last_event_pk,
    latency_report,
    setup_environment,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
DATABASE = "syncdesk_bench_priority"
REALTIME_TYPES = (
    "order.created",
    "shipment.dispatched",
    "shipment.carrier_scanned",
    "refund.issued",
    "consent.changed",
)
BULK_TYPES = ("order.status_changed", "stock.changed", "customer.upserted")


def brief(rows: Any) -> dict[str, Any]:
    report = latency_report(list(rows))
    return {k: report[k] for k in ("events", "p50_s", "p95_s", "max_s", "p95_split_s")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--alone-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=3, help="realtime events a second")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--settle-timeout", type=float, default=1800.0)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    setup_environment(args.postgres, args.redis, DATABASE)
    try:
        return run(args)
    finally:
        if not args.keep:
            drop_database(args.postgres, DATABASE)


def run(args: argparse.Namespace) -> int:
    tmp = ROOT / "var" / f"bench-priority-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["SYNCDESK_VAR_DIR"] = str(tmp)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from eventgen import Generator
    from eventgen.generator import Mix
    from monitoring.models import SourceEvent

    realtime_mix = Mix(order_status=0, stock=0, customer=0)
    bulk_mix = Mix(new_order=0, dispatch=0, carrier_scan=0, refund=0, consent=0, order_status=40,
                   stock=40, customer=20)  # fmt: skip
    fields = ("occurred_at", "received_at", "staged_at", "sent_at", "delivered_at")
    stack = Stack(tmp).start()
    gen = Generator(seed=17, customers=args.customers, live=True)
    lock = threading.Lock()  # the generator is not thread-safe

    def realtime_events(n: int) -> list[dict[str, Any]]:
        with lock:
            gen.use_mix(realtime_mix)
            return gen.events(n)

    def bulk_events(n: int) -> list[dict[str, Any]]:
        with lock:
            gen.use_mix(bulk_mix)
            return gen.events(n)

    def stream(stop: threading.Event) -> None:
        while not stop.is_set():
            tick = time.monotonic()
            stack.post(realtime_events(args.rate))
            stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))

    def post_backlog(events: list[dict[str, Any]]) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(stack.post, [events[i : i + 100] for i in range(0, len(events), 100)]))

    def drained(since_pk: int) -> float:
        """When no backlog event after `since_pk` waits to be staged or delivered."""
        deadline = time.monotonic() + args.settle_timeout
        while time.monotonic() < deadline:
            if not SourceEvent.objects.filter(
                pk__gt=since_pk, event_type__in=BULK_TYPES, state__in=("received", "ready")
            ).exists():
                break
            time.sleep(0.25)
        return time.monotonic()

    try:
        stack.warm_up(gen, args.warmup, args.settle_timeout)

        # Realtime alone.
        mark = last_event_pk()
        stop = threading.Event()
        streamer = threading.Thread(target=stream, args=(stop,))
        streamer.start()
        time.sleep(args.alone_seconds)
        stop.set()
        streamer.join()
        stack.wait_settled(mark, args.settle_timeout)
        alone = SourceEvent.objects.filter(pk__gt=mark, state="delivered", lane="realtime")
        alone_report = latency_report(list(alone.values_list(*fields)))

        # The backlog with the realtime stream going on until it has drained.
        backlog = bulk_events(args.backlog)
        mark = last_event_pk()
        stop = threading.Event()
        streamer = threading.Thread(target=stream, args=(stop,))
        streamer.start()
        t0 = time.monotonic()
        window_start = datetime.now(UTC)
        post_backlog(backlog)
        accepted_with = time.monotonic() - t0
        t1 = drained(mark)
        window_end = datetime.now(UTC)
        stop.set()
        streamer.join()
        stack.wait_settled(mark, args.settle_timeout)
        during = SourceEvent.objects.filter(
            pk__gt=mark,
            event_type__in=REALTIME_TYPES,
            state="delivered",
            occurred_at__gte=window_start,
            occurred_at__lte=window_end,
        )
        during_rows = list(during.values_list(*fields))
        during_report = latency_report(during_rows)
        # The same events, by whether they came while the backlog was still being posted (the
        # webhook taking 20,000 events as fast as it can) or after, while it drained.
        posted_by = window_start + timedelta(seconds=accepted_with)
        during_report["while_posted"] = brief(r for r in during_rows if r[0] < posted_by)
        during_report["while_draining"] = brief(r for r in during_rows if r[0] >= posted_by)
        with_stream = SourceEvent.objects.filter(pk__gt=mark, event_type__in=BULK_TYPES).count()
        drain_with = t1 - t0

        # The same size of backlog alone.
        backlog = bulk_events(args.backlog)
        mark = last_event_pk()
        t0 = time.monotonic()
        post_backlog(backlog)
        accepted_alone = time.monotonic() - t0
        t1 = drained(mark)
        without_stream = SourceEvent.objects.filter(pk__gt=mark, event_type__in=BULK_TYPES).count()
        drain_alone = t1 - t0

        rate_with = with_stream / drain_with if drain_with else 0.0
        rate_alone = without_stream / drain_alone if drain_alone else 0.0
        p95_alone, p95_during = alone_report["p95_s"], during_report["p95_s"]
        result = {
            "assumptions": {
                "sandbox_profile": stack.profile,
                "backlog": args.backlog,
                "realtime_rate_per_s": args.rate,
                "cores": os.cpu_count(),
                "load_average_1m_at_end": round(os.getloadavg()[0], 1),
            },
            "realtime_alone": alone_report,
            "realtime_during_backlog": during_report,
            "backlog_with_stream": {
                "window_utc": [window_start.isoformat(), window_end.isoformat()],
                "events": with_stream,
                "accepted_in_s": round(accepted_with, 1),
                "drained_in_s": round(drain_with, 1),
                "bulk_events_per_s": round(rate_with, 1),
            },
            "backlog_alone": {
                "events": without_stream,
                "accepted_in_s": round(accepted_alone, 1),
                "drained_in_s": round(drain_alone, 1),
                "bulk_events_per_s": round(rate_alone, 1),
            },
            "targets": {
                "realtime_p95_during_backlog_le_1s": p95_during <= 1.0,
                "realtime_p95_during_le_2x_alone": p95_during <= 2 * p95_alone,
                "bulk_rate_with_stream_ge_70pct": rate_with >= 0.7 * rate_alone,
                "bulk_rate_ratio": round(rate_with / rate_alone, 2) if rate_alone else None,
            },
        }
        print(json.dumps(result, indent=2, default=str))
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
