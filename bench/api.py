"""The API's list endpoints at size: 1,000,000 events / 100,000 exception groups in one workspace
against 10,000 / 1,000 in another, in one database.

Fills both with bulk_create on PostgreSQL (groups as bench/inbox.py fills them) and prints the
median time of each call, the whole request through the test client with an admin key of that
workspace (key check, rate limit, queries, JSON): the event list, filtered by state, by flow and
time range, by email, its next page by cursor; the exception list (For review), filtered (Open,
kind and team), and its next page. The two sizes are timed in turn, call by call, so load from
elsewhere on the machine weighs on both alike. Target: each at most 100 ms at the full size, and
at most 1.5x its time at 1/100 of the size.

It empties the event and inbox tables of the database it is given, so it refuses any database
whose name does not start with "bench":

    psql -h 127.0.0.1 -U postgres -c 'create database bench_api'
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_api .venv/bin/python bench/api.py

`--scale 0.01` fills a hundredth of both sizes (a quick check of the bench itself, not a figure
to quote); `--reuse` times what an earlier run filled, after applying any new migration.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

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
from api import keys  # noqa: E402
from bench import inbox  # noqa: E402
from connectors.models import Connection  # noqa: E402
from monitoring.models import Customer, Flow, SourceEvent  # noqa: E402

LARGE_EVENTS = 1_000_000
LARGE_GROUPS = 100_000
CHUNK = 10_000
RUNS = 15
TARGET_MS = 100.0
RATIO = 1.5
FLOWS = 4
CUSTOMERS = 20_000
# The states of a day's events: most delivered, some waiting, a few failed or skipped.
STATES = ["delivered"] * 90 + ["ready"] * 3 + ["held"] * 2 + ["failed"] * 3 + ["skipped"] * 2


def check_database() -> None:
    db = settings.DATABASES["default"]
    if connection.vendor != "postgresql" or not str(db["NAME"]).startswith("bench"):
        sys.exit(
            "bench/api.py needs DATABASE_URL=postgres://…/bench_<name> (it empties the event "
            "and inbox tables of that database)."
        )


def reset(empty: bool = True) -> list[tuple[Workspace, str, list[Flow]]]:
    """Two workspaces, "bench-api-small" (1/100) and "bench-api" (full), each with flows, an
    admin key and its customers; the event and inbox tables emptied unless `empty` is False."""
    call_command("migrate", verbosity=0)
    if empty:
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE monitoring_sourceevent, monitoring_customer, "
                "exceptions_inbox_occurrence, exceptions_inbox_activity, "
                "exceptions_inbox_assignmentnotice, exceptions_inbox_exceptiongroup, "
                "exceptions_inbox_knownflow CASCADE"
            )
    made = []
    for slug in ("bench-api-small", "bench-api"):
        workspace = Workspace.objects.filter(slug=slug).first() or Workspace.objects.create(
            name=slug.title(), slug=slug
        )
        admin = User.objects.filter(username=slug).first() or User.objects.create_user(slug)
        workspace.add_member(admin, role="admin")
        source = Connection.objects.get_or_create(
            workspace=workspace, kind="canonical", name="Bench ERP"
        )[0]
        flows = [
            Flow.objects.get_or_create(
                workspace=workspace, name=f"Bench flow {n}", defaults={"source": source}
            )[0]
            for n in range(FLOWS)
        ]
        _row, key = keys.issue_key(workspace, f"bench {slug} {time.time()}", None, "act", admin)
        made.append((workspace, key, flows))
    return made


def fill_events(workspace: Workspace, flows: list[Flow], count: int, rng: random.Random) -> None:
    """`count` events over the last 30 days, in received order (ids grow with time)."""
    customers = Customer.objects.bulk_create(
        [
            Customer(workspace=workspace, email=f"c{n}@{workspace.slug}.example.com")
            for n in range(min(CUSTOMERS, max(1, count // 50)))
        ]
    )
    now = timezone.now()
    start = now - timedelta(days=30)
    step = timedelta(days=30) / max(1, count)
    for chunk_start in range(0, count, CHUNK):
        rows = []
        for n in range(chunk_start, min(count, chunk_start + CHUNK)):
            flow = flows[n % len(flows)]
            received = start + step * n
            state = rng.choice(STATES)
            rows.append(
                SourceEvent(
                    workspace=workspace,
                    connection_id=flow.source_id,
                    flow=flow,
                    source_system="bench-erp",
                    source_account="main",
                    source_event_id=f"{workspace.slug}:{n}",
                    event_type="order.created",
                    entity_type="order",
                    entity_key=f"bench-erp:main:order:{n}",
                    source_version=received,
                    envelope={"event_type": "order.created", "data": {"order_number": f"SO{n}"}},
                    occurred_at=received - timedelta(seconds=2),
                    received_at=received,
                    staged_at=received,
                    delivered_at=received + timedelta(seconds=3) if state == "delivered" else None,
                    state=state,
                    order_ref=f"SO{n}",
                    customer=customers[n % len(customers)],
                )
            )
        SourceEvent.objects.bulk_create(rows)
        print(f"  … {min(count, chunk_start + CHUNK):,} events", end="\r", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE monitoring_sourceevent, monitoring_customer")
    print()


def calls_of(client: Client, workspace: Workspace, flows: list[Flow]) -> dict[str, str]:
    base = f"/api/v1/w/{workspace.slug}"
    now = timezone.now()
    window = urlencode(
        {
            "flow": flows[1].pk,
            "received_from": (now - timedelta(days=10)).isoformat(),
            "received_to": (now - timedelta(days=9)).isoformat(),
        }
    )
    email = (
        Customer.objects.filter(workspace=workspace)
        .order_by("pk")
        .values_list("email", flat=True)[0]
    )
    # Cursors past a short first page: the smallest size may hold fewer than two full pages.
    events_cursor = client.get(f"{base}/events?limit=2").json()["next_cursor"]
    groups_cursor = client.get(f"{base}/exceptions?limit=2").json()["next_cursor"]
    assert events_cursor and groups_cursor, "too few events or groups for a second page"
    return {
        "events": f"{base}/events?limit=100",
        "events, failed": f"{base}/events?limit=100&state=failed",
        "events, flow and a day": f"{base}/events?limit=100&{window}",
        "events, by email": f"{base}/events?limit=100&{urlencode({'email': email})}",
        "events, next page": f"{base}/events?limit=100&cursor={events_cursor}",
        "exceptions": f"{base}/exceptions?limit=100",
        "exceptions, filtered": f"{base}/exceptions?limit=100&tab=open&kind=sku_mapping_gap"
        "&team=ops",
        "exceptions, next page": f"{base}/exceptions?limit=100&cursor={groups_cursor}",
    }


def timed(client: Client, url: str) -> tuple[float, float, int]:
    """Wall time of the whole request, and the time and number of its queries (ms, ms, n)."""
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url)
        wall = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (url, response.content[:300])
    sql = sum(float(q["time"]) for q in queries.captured_queries) * 1000
    return wall, sql, len(queries.captured_queries)


def measure(sizes: list[tuple[Workspace, str, list[Flow]]]) -> list[dict[str, float]]:
    """Median per call and size, the sizes timed in turn, call by call."""
    clients = []
    for workspace, key, flows in sizes:
        client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}")
        clients.append((workspace, client, calls_of(client, workspace, flows)))
    results: list[dict[str, float]] = [{} for _ in sizes]
    for name in clients[0][2]:
        samples: list[list[tuple[float, float, int]]] = [[] for _ in sizes]
        for run in range(3 + RUNS):  # the first three warm caches and connections
            for i, (_workspace, client, calls) in enumerate(clients):
                sample = timed(client, calls[name])
                if run >= 3:
                    samples[i].append(sample)
        for i, runs in enumerate(samples):
            results[i][name] = statistics.median(s[0] for s in runs)
            sql = statistics.median(s[1] for s in runs)
            print(
                f"  {clients[i][0].slug:<16} {name:<24} {results[i][name]:7.1f} ms, "
                f"SQL {sql:6.1f} ms in {runs[-1][2]} queries"
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="share of the full size to fill (default 1: 1,000,000 events / 100,000 groups)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time what an earlier run filled (after migrating it), without filling again",
    )
    args = parser.parse_args()
    scale = args.scale
    events, groups = int(LARGE_EVENTS * scale), int(LARGE_GROUPS * scale)
    check_database()
    rng = random.Random(7)
    with override_settings(
        API_RATE_PER_MINUTE=1_000_000,
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    ):
        small, full = reset(empty=not args.reuse)
        # Group numbers run on from one workspace to the next (bench/inbox.py's subjects).
        for (workspace, _key, flows), n_events, first, last in (
            (small, events // 100, 0, groups // 100),
            (full, events, groups // 100, groups // 100 + groups),
        ):
            if args.reuse:
                n_events = SourceEvent.objects.filter(workspace=workspace).count()
                print(f"{workspace.slug}: {n_events:,} events, as filled before")
                continue
            print(f"{workspace.slug}: {n_events:,} events, {last - first:,} groups")
            fill_events(workspace, flows, n_events, rng)
            inbox.fill(workspace, first, last, rng)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE monitoring_sourceevent")
        print("load average before timing: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        at_small, at_full = measure([small, full])
        print("load average after timing:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    print(f"\nmedian of {RUNS} requests (ms)   at 1/100      at full     ratio")
    failed = False
    for name, small_ms in at_small.items():
        full_ms = at_full[name]
        ratio = full_ms / small_ms
        ok = full_ms <= TARGET_MS and ratio <= RATIO
        failed |= not ok
        print(
            f"{name:<28} {small_ms:>10.1f} {full_ms:>12.1f} {ratio:>8.2f}x  {'ok' if ok else 'MISS'}"
        )
    print(f"target: ≤ {TARGET_MS:.0f} ms and ≤ {RATIO}x the 1/100 size")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
