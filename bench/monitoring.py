"""Monitoring at size: the flows page and the timeline search at 10,000 and 1,000,000 events.

Fills one workspace (4 flows, 30 days of events: ~98% delivered with their four timestamps, a
recent backlog, some held and failed; 200,000 customers, 20,000 of them opted out in DotDigital
and written back to their source) with bulk_create on PostgreSQL, and
prints the median time of the whole request (view, queries, template) as a signed-in member:
the flows page, its htmx refresh, and the event timeline searched by order number, by email and
by source event id. Target: each at most 300 ms at 1,000,000 events.

It empties the engine's event tables of the database it is given, so it refuses any database
whose name does not start with "bench":

    psql -h 127.0.0.1 -U postgres -c 'create database bench_watch'
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_watch .venv/bin/python bench/monitoring.py
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Workspace  # noqa: E402
from connectors.models import Connection  # noqa: E402
from monitoring.models import Customer, Flow, FlowSample, OptOutWriteBack, SourceEvent  # noqa: E402  # noqa: E402

SIZES = (10_000, 1_000_000)
CUSTOMERS = 200_000
CHUNK = 10_000
RUNS = 15
TARGET_MS = 300.0
DAYS = 30
FLOWS = ("Brightpearl → DotDigital", "Mintsoft → DotDigital", "Stokly → DotDigital", "Patchworks → DotDigital")  # fmt: skip


def check_database() -> None:
    db = settings.DATABASES["default"]
    if connection.vendor != "postgresql" or not str(db["NAME"]).startswith("bench"):
        sys.exit(
            "bench/monitoring.py needs DATABASE_URL=postgres://…/bench_<name> (it empties the "
            "engine's tables of that database)."
        )


def reset() -> tuple[Workspace, User, list[Flow]]:
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE monitoring_sourceevent, monitoring_customer, monitoring_flowsample, "
            "monitoring_optoutwriteback, monitoring_flow CASCADE"
        )
    workspace = Workspace.objects.filter(slug="bench").first() or Workspace.objects.create(
        name="Bench retail", slug="bench"
    )
    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench")
    workspace.add_member(user, role="member", teams=("ops",))
    destination = Connection.objects.create(workspace=workspace, kind="dotdigital", name="DD")
    flows = []
    for name in FLOWS:
        source = Connection.objects.create(workspace=workspace, kind="canonical", name=name[:20])
        flows.append(
            Flow.objects.create(
                workspace=workspace, name=name, source=source, destination=destination
            )
        )
    Customer.objects.bulk_create(
        [
            Customer(workspace=workspace, email=f"c{i}@example.com", is_guest=False)
            for i in range(CUSTOMERS)
        ],
        batch_size=CHUNK,
    )
    now = timezone.now().replace(second=0, microsecond=0)
    OptOutWriteBack.objects.bulk_create(
        [
            OptOutWriteBack(
                workspace=workspace,
                flow=flows[i % len(flows)],
                source_id=flows[i % len(flows)].source_id,
                email=f"c{i}@example.com",
                reason="Unsubscribed",
                opted_out_at=now - timedelta(minutes=i),
                state="written",
                via="connector",
                written_at=now - timedelta(minutes=i) + timedelta(seconds=90),
            )
            for i in range(0, CUSTOMERS, 10)
        ],
        batch_size=CHUNK,
    )
    FlowSample.objects.bulk_create(
        [
            FlowSample(flow=f, at=now - timedelta(minutes=m), backlog=m % 50)
            for f in flows
            for m in range(24 * 60)
        ],
        batch_size=CHUNK,
    )
    return workspace, user, flows


def fill(
    workspace: Workspace, flows: list[Flow], start: int, stop: int, rng: random.Random
) -> None:
    now = timezone.now()
    first_customer = (
        Customer.objects.filter(workspace=workspace).order_by("pk").values_list("pk", flat=True)[0]
    )
    span = DAYS * 86400
    for chunk_start in range(start, stop, CHUNK):
        rows = []
        for n in range(chunk_start, min(chunk_start + CHUNK, stop)):
            flow = flows[n % len(flows)]
            # Spread over 30 days, newest last; the most recent ~0.5% still waiting.
            age = span * (1 - n / SIZES[-1]) if stop > SIZES[0] else span * (1 - n / stop)
            occurred = now - timedelta(seconds=age + rng.uniform(0, 30))
            received = occurred + timedelta(seconds=rng.uniform(0.5, 20))
            roll = rng.random()
            state = "delivered"
            if age < 600 and roll < 0.5:
                state = rng.choice(("received", "ready"))
            elif roll < 0.004:
                state = "failed"
            elif roll < 0.008:
                state = "held"
            sent = received + timedelta(seconds=rng.expovariate(1 / 8))
            delivered = sent + timedelta(seconds=rng.expovariate(1 / 3))
            number = f"SO-{n // 3}"
            rows.append(
                SourceEvent(
                    workspace=workspace,
                    connection_id=flow.source_id,
                    flow=flow,
                    source_system="bench",
                    source_account="main",
                    source_event_id=f"bench:{n}",
                    event_type="order.created",
                    entity_type="order",
                    entity_key=f"bench:main:order:{n // 3}",
                    source_version=occurred,
                    envelope={"event_type": "order.created", "data": {"order_number": number}},
                    occurred_at=occurred,
                    received_at=received,
                    staged_at=received if state != "received" else None,
                    sent_at=sent if state == "delivered" else None,
                    delivered_at=delivered if state == "delivered" else None,
                    state=state,
                    order_ref=number,
                    customer_id=first_customer + (n // 3) % CUSTOMERS,
                )
            )
        SourceEvent.objects.bulk_create(rows, batch_size=CHUNK)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_sourceevent")


def median_ms(client: Client, url: str, **headers: Any) -> tuple[float, int, float]:
    for _ in range(3):
        assert client.get(url, **headers).status_code == 200, url
    times, sql = [], []
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url, **headers)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
        sql.append(sum(float(q["time"]) for q in queries.captured_queries) * 1000)
    return statistics.median(times), len(queries.captured_queries), statistics.median(sql)


def measure(workspace: Workspace, user: User, size: int) -> dict[str, float]:
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    n = size - 5_000
    n -= ((n // 3) % CUSTOMERS % 10) * 3  # a customer who opted out: the timeline shows it too
    pages = {
        "flows page": (f"/w/{workspace.slug}/flows/", {}),
        "flows live refresh": (f"/w/{workspace.slug}/flows/", {"HTTP_HX_REQUEST": "true"}),
        "timeline: order no.": (f"/w/{workspace.slug}/events/?q=SO-{n // 3}", {}),
        "timeline: email": (
            f"/w/{workspace.slug}/events/?q=c{(n // 3) % CUSTOMERS}@example.com",
            {},
        ),
        "timeline: event id": (f"/w/{workspace.slug}/events/?q=bench:{n}", {}),
    }
    out = {}
    for name, (url, headers) in pages.items():
        ms, count, sql_ms = median_ms(client, url, **headers)
        out[name] = ms
        load = os.getloadavg()[0]
        print(
            f"  {name:<22} {ms:7.1f} ms, of which SQL {sql_ms:6.1f} ms in {count} queries"
            f" (load average {load:.1f})"
        )
    return out


def main() -> int:
    check_database()
    rng = random.Random(8)
    with override_settings(
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ):
        results = {}
        for size in SIZES:
            workspace, user, flows = reset()
            started = time.perf_counter()
            fill(workspace, flows, 0, size, rng)
            print(f"{size:,} events (filled in {time.perf_counter() - started:.0f} s)")
            results[size] = measure(workspace, user, size)
    small, large = results[SIZES[0]], results[SIZES[-1]]
    print(f"\nmedian of {RUNS} requests (ms)   {SIZES[0]:>10,} {SIZES[-1]:>12,}")
    failed = False
    for name in small:
        ok = large[name] <= TARGET_MS
        failed |= not ok
        print(f"{name:<28} {small[name]:>10.1f} {large[name]:>12.1f}  {'ok' if ok else 'MISS'}")
    print(f"target: ≤ {TARGET_MS:.0f} ms at {SIZES[-1]:,} events")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
