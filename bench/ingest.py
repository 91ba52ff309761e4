"""Ingest and staging throughput: webhook events accepted per second (batches of 100, and one
event per request) through gunicorn, then staged events per second.

Run against a scratch PostgreSQL database (it is migrated, and the bench's workspace is removed at
the end):

    createdb -h 127.0.0.1 -U postgres syncdesk_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/syncdesk_bench \\
        .venv/bin/python bench/ingest.py [--events 10000] [--single 1000] [--clients 8] [--workers 4] [--mix]
        [--in-process 1000]

It also posts `--in-process` events in this process (Django's test client), one a request and in
batches of 100, and prints the CPU they took: the view's own cost, without HTTP.

Target: >= 2,000 events/s accepted in batches of 100. Figures depend on the machine:
the script prints its core count with them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_events(n: int, run: str, start: int = 0) -> list[dict]:
    events = []
    for i in range(start, start + n):
        number = f"B{run}-{i}"
        total = f"{(i % 500) + 10}.{i % 100:02d}"
        events.append(
            {
                "schema": "sync.event/v1",
                "event_type": "order.created",
                "source": {"system": "bench", "account": run},
                "source_event_id": f"bench:{run}:{i}",
                "occurred_at": "2026-05-01T10:00:00Z",
                "source_updated_at": "2026-05-01T10:00:00Z",
                "entity": {"type": "order", "key": f"bench:order:{number}"},
                "identity": {"email": f"Customer{i % 2000}@Example.com", "is_guest": i % 3 == 0},
                "data": {
                    "order_key": f"bench:order:{number}",
                    "order_number": number,
                    "placed_at": "2026-05-01T10:00:00Z",
                    "currency": "GBP",
                    "lines": [
                        {
                            "line_key": "1",
                            "sku": f"SKU-{i % 300}",
                            "quantity": 1,
                            "line_total": {"amount": total, "currency": "GBP"},
                        }
                    ],
                    "totals": {"grand_total": {"amount": total, "currency": "GBP"}},
                    "status": {
                        "lifecycle": "open",
                        "fulfilment": "unfulfilled",
                        "financial": "paid",
                    },
                },
            }
        )
    return events


def make_mixed_events(n: int, run: str, start: int = 0) -> list[dict]:
    """A day's mix rather than only new orders: per ten events two new orders, an order update,
    a status change, two dispatches, a refund, a product and two stock changes (a snapshot and a
    delta). Each order's events follow it in the stream, as a source sends them."""
    events: list[dict] = []
    for i in range(start, start + n):
        group, kind = divmod(i, 10)
        number = f"B{run}-{group}"
        total = f"{(group % 500) + 10}.{group % 100:02d}"
        sku = f"SKU-{group % 300}"
        at = f"2026-05-01T{10 + kind:02d}:{group % 60:02d}:00Z"
        sid = f"bench:{run}:{i}"
        if kind in (0, 5):
            [order] = make_events(1, run, start=group * 2 + (kind == 5))
            order["source_event_id"] = sid
            events.append(order)
            continue
        order_key = f"bench:order:B{run}-{group * 2}"
        envelope: dict = {
            "schema": "sync.event/v1",
            "source": {"system": "bench", "account": run},
            "source_event_id": sid,
            "occurred_at": at,
            "source_updated_at": at,
            "links": {"order_number": f"B{run}-{group * 2}"},
        }
        if kind == 1:
            [order] = make_events(1, run, start=group * 2)
            order.update(envelope, event_type="order.updated")
            order["data"]["revision"] = at
            order["data"]["status"]["financial"] = "partially_refunded"
            events.append(order)
        elif kind == 9:
            events.append(
                {
                    **envelope,
                    "event_type": "order.status_changed",
                    "entity": {"type": "order", "key": order_key},
                    "data": {
                        "order_key": order_key,
                        "to": {"lifecycle": "closed", "fulfilment": "dispatched"},
                        "source_status_raw": "closed",
                    },
                }
            )
        elif kind in (2, 3):
            key = f"bench:shipment:{number}-{kind - 1}"
            events.append(
                {
                    **envelope,
                    "event_type": "shipment.dispatched",
                    "entity": {"type": "shipment", "key": key},
                    "data": {
                        "shipment_key": key,
                        "order_key": order_key,
                        "dispatched_at": at,
                        "lines": [{"sku": sku, "quantity": 1}],
                        "tracking_numbers": [f"TRK{run}{i}"],
                        "is_partial": kind == 2,
                    },
                }
            )
        elif kind == 4:
            key = f"bench:refund:{number}"
            events.append(
                {
                    **envelope,
                    "event_type": "refund.issued",
                    "entity": {"type": "refund", "key": key},
                    "data": {
                        "refund_key": key,
                        "order_key": order_key,
                        "refunded_at": at,
                        "amount": {"amount": "1.00", "currency": "GBP"},
                    },
                }
            )
        elif kind == 6:
            events.append(
                {
                    **envelope,
                    "event_type": "product.updated",
                    "entity": {"type": "product", "key": f"bench:product:{sku}"},
                    "data": {
                        "sku": sku,
                        "product_key": f"bench:product:{sku}",
                        "status": "active",
                        "name": f"Product {sku}",
                        "price": {"amount": total, "currency": "GBP"},
                    },
                }
            )
        else:  # 7, 8: a snapshot, then a delta after it
            as_of = f"2026-05-{1 + group // 1440 % 28:02d}T{group // 60 % 24:02d}:{group % 60:02d}:{kind:02d}Z"
            events.append(
                {
                    **envelope,
                    "event_type": "stock.changed",
                    "entity": {"type": "stock", "key": f"bench:stock:{sku}:WH1"},
                    "data": {
                        "sku": sku,
                        "location": {"key": "WH1", "name": "Warehouse 1"},
                        "mode": "snapshot" if kind == 7 else "delta",
                        "as_of": as_of,
                        "quantities": (
                            {"on_hand": 20, "allocated": 2, "saleable": 18}
                            if kind == 7
                            else {"on_hand": -1, "saleable": -1}
                        ),
                    },
                }
            )
    return events


def post_all(url: str, bodies: list[bytes], clients: int) -> tuple[float, int]:
    session_per_thread: dict[int, requests.Session] = {}

    def post(body: bytes) -> int:
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        response = session.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}: {response.text[:300]}")
        return int(response.json()["accepted"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        accepted = sum(pool.map(post, bodies))
    return time.perf_counter() - started, accepted


def in_process_cpu(url: str, bodies: list[bytes]) -> float:
    """CPU seconds of this process posting `bodies` to the webhook view through Django's test
    client: the view, the ORM and the driver, without gunicorn's HTTP parsing."""
    from django.test import Client

    client = Client(HTTP_HOST="localhost")
    started = time.process_time()
    for body in bodies:
        response = client.post(url, data=body, content_type="application/json")
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}: {response.content[:300]!r}")
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events posted 100 per request")
    parser.add_argument("--single", type=int, default=1_000, help="events posted one per request")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--stage-seconds",
        type=float,
        default=None,
        help="stop staging after the batch that passes this many seconds (default: stage all)",
    )
    parser.add_argument(
        "--mix",
        action="store_true",
        help="post a mixed load (orders, updates, status changes, dispatches, refunds, products, "
        "stock) instead of new orders only",
    )
    parser.add_argument(
        "--in-process",
        type=int,
        default=1_000,
        help="events also posted in this process (Django's test client), one a request and in "
        "batches of 100, timed by CPU (0: none)",
    )
    args = parser.parse_args()
    make = make_mixed_events if args.mix else make_events
    load_before = os.getloadavg()

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("note: DATABASE_URL is not PostgreSQL; the target is measured on PostgreSQL")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True
    )

    import django

    django.setup()
    from django.db import connection

    from accounts.models import Workspace
    from connectors.models import Connection
    from monitoring.models import Flow, SourceEvent
    from monitoring.pipeline.staging.run import run_staging

    run = uuid.uuid4().hex[:8]
    workspace = Workspace.objects.create(name=f"Bench {run}", slug=f"bench-{run}")
    conn = Connection.objects.create(workspace=workspace, kind="canonical", name="bench")
    token = conn.rotate_webhook_token()
    flow = Flow.objects.create(
        workspace=workspace, name="bench", source=conn, masters_products=args.mix
    )

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}/hooks/{token}/"
        for _ in range(100):
            try:
                requests.post(
                    url, data=b"[]", headers={"Content-Type": "application/json"}, timeout=60
                )
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        # Warm every worker (imports, schema compiled) before measuring.
        post_all(
            url,
            [json.dumps(make_events(1, run + "w", i)).encode() for i in range(args.workers * 4)],
            args.clients,
        )

        batched = make(args.events, run)
        bodies = [
            json.dumps({"events": batched[i : i + 100]}).encode()
            for i in range(0, len(batched), 100)
        ]
        seconds, accepted = post_all(url, bodies, args.clients)
        singles = make(args.single, run, start=args.events)
        seconds_1, accepted_1 = post_all(
            url, [json.dumps(e).encode() for e in singles], args.clients
        )
    finally:
        server.terminate()
        server.wait(10)

    total = SourceEvent.objects.filter(workspace=workspace, state="received").count()
    started = time.perf_counter()
    staged = run_staging(flow_id=flow.pk, time_budget=args.stage_seconds)
    staging_seconds = time.perf_counter() - started
    ready = SourceEvent.objects.filter(workspace=workspace, state="ready").count()

    # After staging, so the staged figure is of the HTTP posts alone.
    in_process = ""
    if args.in_process:
        events = make(args.in_process, run + "p")
        single_cpu = in_process_cpu(f"/hooks/{token}/", [json.dumps(e).encode() for e in events])
        more = make(args.in_process, run + "q")
        in_batches = [
            json.dumps({"events": more[i : i + 100]}).encode() for i in range(0, len(more), 100)
        ]
        batch_cpu = in_process_cpu(f"/hooks/{token}/", in_batches)
        in_process = (
            f"in process, CPU: {single_cpu / len(events) * 1e3:.2f} ms a one-event request; "
            f"{batch_cpu / len(more) * 1e3:.3f} ms an event in batches of 100"
        )
    load_after = os.getloadavg()
    print(
        f"database: {connection.vendor}; cores: {os.cpu_count()}; gunicorn workers: {args.workers}; clients: {args.clients}; load: {'mixed' if args.mix else 'new orders'}"
    )
    print(
        "load average (1, 5, 15 min): before {:.2f} {:.2f} {:.2f}; after {:.2f} {:.2f} {:.2f}".format(
            *load_before, *load_after
        )
    )
    print(
        f"accepted, batches of 100: {accepted} events in {seconds:.2f} s = {accepted / seconds:,.0f} events/s"
    )
    print(
        f"accepted, one per request: {accepted_1} events in {seconds_1:.2f} s = {accepted_1 / seconds_1:,.0f} events/s"
    )
    if in_process:
        print(in_process)
    print(
        f"staged (one process): {staged} of {total} events in {staging_seconds:.2f} s = {staged / staging_seconds:,.0f} events/s ({ready} ready to deliver)"
    )
    # Leave the scratch database as it was.
    from monitoring.models import Customer, Order, Product, StockLevel

    SourceEvent.objects.filter(workspace=workspace).delete()
    StockLevel.objects.filter(workspace=workspace).delete()
    Product.objects.filter(workspace=workspace).delete()
    Order.objects.filter(workspace=workspace).delete()
    Customer.objects.filter(workspace=workspace).delete()
    Flow.objects.filter(workspace=workspace).delete()
    workspace.delete()


if __name__ == "__main__":
    main()
