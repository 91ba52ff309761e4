"""Benchmark: 200,000 contacts and 200,000 insight records into DotDigital through imports.

Runs against the sandbox started here with its `realistic` profile (50 ms latency, imports take
1 s + 0.05 ms/record, per-minute tiers 600 single / 120 import / 1,200 status, 25 contact and 5
insight imports at once), through the real client and the shared rate budget. Beside it, the
naive way (one single-record call each) on a 1,000-record sample, extrapolated to 400,000.

    DJANGO_SETTINGS_MODULE=config.settings .venv/bin/python bench/dotdigital_client.py

With no DATABASE_URL the budget lives in a throwaway SQLite file (migrated here); set
DATABASE_URL=postgres://... to use PostgreSQL. Exits non-zero unless the run saw no 429 and
never more than 25 contact or 5 insight imports in flight.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "apiuser-bench@apiconnector.com", "bench-password"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--contacts", type=int, default=200_000)
    p.add_argument("--insight", type=int, default=200_000)
    p.add_argument("--chunk", type=int, default=5_000, help="records per import body at most")
    p.add_argument("--sample", type=int, default=1_000, help="records for the naive way")
    p.add_argument("--workers", type=int, default=40, help="threads submitting imports")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between status polls")
    return p.parse_args()


def setup_django(workdir: Path) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if not os.environ.get("DATABASE_URL"):
        os.environ["SYNCDESK_VAR_DIR"] = str(workdir)
        os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "connectors", verbosity=0)


def start_sandbox(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / "sandbox.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connectors.dotdigital.sandbox",
            "--port",
            "0",
            "--db",
            str(workdir / "sandbox.sqlite3"),
            "--profile",
            "realistic",
            "--api-user",
            f"{USER}:{PASSWORD}",
        ],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("DotDigital sandbox listening on "):
                return proc, line.split()[4]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"the sandbox did not start:\n{log.read_text(errors='replace')}")


class Tally:
    """Every answer the clients got, counted by kind (a requests response hook)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.bytes_sent = 0
        self.largest_body = 0

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        path = request.path_url.split("?")[0]
        if request.method == "PUT" and path.endswith("/v3/import"):
            kind = "import"
        elif request.method == "GET" and "/v3/import/" in path:
            kind = "poll"
        else:
            kind = "other"
        size = len(request.body or b"")
        with self.lock:
            self.counts[kind] += 1
            if response.status_code == 429:
                self.counts["429"] += 1
            self.bytes_sent += size
            self.largest_body = max(self.largest_body, size)


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dotdigital-"))
    setup_django(workdir)

    import requests

    from connectors.budget import Lane
    from connectors.dotdigital import errors
    from connectors.dotdigital.client import DotDigitalClient
    from connectors.dotdigital.types import ContactWrite, ImportHandle, InsightWrite

    sandbox, url = start_sandbox(workdir)
    tally = Tally()

    def make_client(lane: Lane, account_key: str) -> DotDigitalClient:
        session = requests.Session()
        session.hooks["response"].append(tally.hook)
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        session.mount("http://", adapter)
        return DotDigitalClient(
            USER,
            PASSWORD,
            discovery_url=url,
            account_key=account_key,
            lane=lane,
            session=session,
            max_wait=600.0,
            max_records=args.chunk,
        )

    try:
        client = make_client(Lane.BULK, "bench:bulk")
        for name, kind in (("LTV", "Numeric"), ("ORDER_COUNT", "Numeric"), ("LAST_ORDER", "Date")):
            client.create_data_field(name, kind)

        def contact(n: int) -> ContactWrite:
            return ContactWrite(
                email=f"customer{n:07d}@emailsim.io",
                data_fields={
                    "FIRSTNAME": f"First{n}",
                    "LASTNAME": f"Last{n}",
                    "LTV": round(n * 1.37 % 5000, 2),
                    "ORDER_COUNT": n % 17,
                    "LAST_ORDER": "2026-11-01T10:00:00Z",
                },
            )

        def order(n: int) -> InsightWrite:
            return InsightWrite(
                f"ORD-{n:07d}",
                {
                    "order_number": f"ORD-{n:07d}",
                    "currency": "GBP",
                    "status": "dispatched",
                    "purchase_date": "2026-11-01T10:00:00Z",
                    "total": round(19.99 + n % 300, 2),
                    "lines": [
                        {
                            "sku": f"SKU-{(n * 7 + i) % 5000:05d}",
                            "name": "Wool beanie",
                            "qty": 1,
                            "price": 9.99,
                        }
                        for i in range(2)
                    ],
                },
                f"customer{n % args.contacts:07d}@emailsim.io",
            )

        # -- imports: contacts before the insight data that refers to them ------------------
        chunks = [
            range(start, min(start + args.chunk, args.contacts))
            for start in range(0, args.contacts, args.chunk)
        ]
        orders_per_chunk = max(1, args.insight // max(1, len(chunks)))
        failures: Counter[str] = Counter()
        records_done: Counter[str] = Counter()
        lock = threading.Lock()

        def settle(handles: list[ImportHandle]) -> None:
            for handle in handles:
                status = client.wait_for_import(handle, interval=args.poll, timeout=3600)
                with lock:
                    records_done[handle.kind.value] += len(handle.keys) - len(status.failures)
                    for failure in status.failures.values():
                        failures[f"{handle.kind.value}:{failure.code}"] += 1

        def with_retries(submit: Callable[[], list[ImportHandle]]) -> list[ImportHandle]:
            while True:
                try:
                    return submit()
                except errors.RetryableError as exc:
                    time.sleep(exc.retry_after or 1.0)

        def pipeline(index: int) -> None:
            numbers = chunks[index]
            settle(with_retries(lambda: client.import_contacts([contact(n) for n in numbers])))
            first = index * orders_per_chunk
            last = args.insight if index == len(chunks) - 1 else first + orders_per_chunk
            batch = [order(n) for n in range(first, last)]
            settle(
                with_retries(
                    lambda: client.import_insight("Orders", batch, collection_type="orders")
                )
            )

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            for future in [pool.submit(pipeline, i) for i in range(len(chunks))]:
                future.result()
        bulk_seconds = time.monotonic() - started
        bulk_counts = dict(tally.counts)
        bulk_bytes, largest = tally.bytes_sent, tally.largest_body

        # -- the naive way: one single-record call each, on a sample -------------------------
        naive = make_client(Lane.REALTIME, "bench:naive")
        half = args.sample // 2
        naive.create_collection("Naive_orders", type="orders")

        def one(n: int) -> None:
            if n < half:
                naive.upsert_contact(contact(args.contacts + n))
            else:
                record = order(n)
                naive.put_insight_record(
                    "Naive_orders",
                    InsightWrite(record.key, record.json, contact(args.contacts + n - half).email),
                )

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, range(half)))
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, range(half, args.sample)))
        naive_seconds = time.monotonic() - started

        state = requests.get(f"{url}/_sandbox/state", params={"limit": 1}, timeout=120).json()
        calls = requests.get(f"{url}/_sandbox/calls", timeout=120).json()["calls"]
    finally:
        sandbox.kill()
        sandbox.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    sandbox_429 = sum(1 for c in calls if c["status"] == 429)
    peak = state["peak_imports_in_flight"]
    total = args.contacts + args.insight
    per_record = naive_seconds / args.sample
    print("DotDigital client benchmark (sandbox profile: realistic)")
    print(f"  bulk: {args.contacts:,} contacts + {args.insight:,} insight records via imports")
    print(f"    wall time                 {bulk_seconds:10.1f} s")
    print(f"    import calls              {bulk_counts.get('import', 0):10,d}")
    print(f"    status polls              {bulk_counts.get('poll', 0):10,d}")
    print(f"    other calls               {bulk_counts.get('other', 0):10,d}")
    print(
        f"    bytes sent                {bulk_bytes / 1e6:10.1f} MB (largest body {largest / 1e6:.2f} MB)"
    )
    print(
        f"    records accepted          {records_done['contacts']:,} contacts, {records_done['insight']:,} insight"
    )
    print(f"    per-record failures       {dict(failures) or 'none'}")
    print(
        f"    sandbox holds             {state['counts']['contacts']:,} contacts, {state['counts']['records']:,} records"
    )
    print(
        f"    most imports in flight    contacts {peak['contacts']} (cap 25), insight {peak['insight']} (cap 5)"
    )
    print(
        f"  naive: {args.sample:,} single-record calls ({half} contact PATCH + {args.sample - half} insight PUT)"
    )
    print(
        f"    wall time                 {naive_seconds:10.1f} s ({per_record * 1000:.1f} ms/record)"
    )
    linear = per_record * total
    # The sample can fit inside one or two rate windows; the whole never can.
    floor = total / 600 * 60
    naive_total = max(linear, floor)
    print(
        f"    extrapolated to {total:,}  {naive_total / 3600:10.1f} h "
        f"(linear {linear / 3600:.1f} h; rate floor at 600 single calls/min {floor / 3600:.1f} h)"
    )
    print(f"  speed-up of imports over the naive way: {naive_total / bulk_seconds:,.0f}x")
    print(f"  429s: client saw {tally.counts.get('429', 0)}, sandbox logged {sandbox_429}")
    ok = (
        sandbox_429 == 0
        and tally.counts.get("429", 0) == 0
        and peak["contacts"] <= 25
        and peak["insight"] <= 5
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
