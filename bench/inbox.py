"""The inbox at size: 1,000 groups / 10,000 occurrences, then 100,000 / 1,000,000.

Fills one workspace with bulk_create on PostgreSQL, and prints the median time of four pages as a
signed-in admin (the whole request: view, queries and template): the inbox list (default tab), a
filtered list (kind + team), a search by email (over groups and their occurrences) and a group
page. Target: each at most 250 ms, and at most 1.5x its time at 1/100 of the size.

It empties the inbox tables of the database it is given, so it refuses any database whose name
does not start with "bench":

    psql -h 127.0.0.1 -U postgres -c 'create database bench_inbox'
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_inbox .venv/bin/python bench/inbox.py
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

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

from accounts.models import Team, Workspace  # noqa: E402
from exceptions_inbox.kinds import KINDS  # noqa: E402
from exceptions_inbox.models import (  # noqa: E402
    ExceptionGroup,
    KnownFlow,
    Occurrence,
    fingerprint,
)

LARGE_GROUPS = 100_000
PER_GROUP = 10  # occurrences per group: 1,000,000 at the large size
SMALL_GROUPS = LARGE_GROUPS // 100
CHUNK = 5_000
RUNS = 15
TARGET_MS = 250.0
RATIO = 1.5
EMAILS = 200_000

STATES = (
    ["open"] * 55 + ["acknowledged"] * 15 + ["snoozed"] * 5 + ["resolved"] * 20 + ["ignored"] * 5
)
FLOWS = [
    (f"flow:{n}", label)
    for n, label in enumerate(
        [
            "Mintsoft → DotDigital",
            "Brightpearl → DotDigital",
            "Peoplevox → DotDigital",
            "Orderwise → DotDigital",
            "Patchworks relay",
        ],
        start=1,
    )
]


def check_database() -> None:
    db = settings.DATABASES["default"]
    if connection.vendor != "postgresql" or not str(db["NAME"]).startswith("bench"):
        sys.exit(
            "bench/inbox.py needs DATABASE_URL=postgres://…/bench_<name> (it empties the inbox "
            "tables of that database)."
        )


def reset() -> tuple[Workspace, User]:
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE exceptions_inbox_occurrence, exceptions_inbox_activity, "
            "exceptions_inbox_assignmentnotice, exceptions_inbox_exceptiongroup, "
            "exceptions_inbox_knownflow CASCADE"
        )
    workspace = Workspace.objects.filter(slug="bench").first() or Workspace.objects.create(
        name="Bench retail", slug="bench"
    )
    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench")
    workspace.add_member(user, role="admin", teams=("ops",))
    for key, label in FLOWS:
        KnownFlow.objects.get_or_create(workspace=workspace, flow_key=key, flow_label=label)
    return workspace, user


def fill(workspace: Workspace, start: int, stop: int, rng: random.Random) -> None:
    """Groups start..stop-1 with PER_GROUP occurrences each, spread over 90 days."""
    teams = {t.slug: t for t in Team.objects.filter(workspace=workspace)}
    kinds = sorted(KINDS.values(), key=lambda k: k.slug)
    now = timezone.now()
    for chunk_start in range(start, stop, CHUNK):
        groups = []
        for n in range(chunk_start, min(stop, chunk_start + CHUNK)):
            kind = kinds[n % len(kinds)]
            flow_key, flow_label = FLOWS[n % len(FLOWS)]
            last_seen = now - timedelta(seconds=rng.randrange(90 * 86400))
            state = rng.choice(STATES)
            subject = f"SKU-{n:06d}"
            groups.append(
                ExceptionGroup(
                    workspace=workspace,
                    kind=kind.slug,
                    fingerprint=fingerprint(kind.slug, flow_key, subject),
                    flow_key=flow_key,
                    flow_label=flow_label,
                    subject_key=f"sku:{subject}",
                    subject_label=subject,
                    title=f"{kind.title}: {subject}",
                    sku=subject,
                    team=teams[kind.default_team],
                    state=state,
                    snoozed_until=now + timedelta(days=1) if state == "snoozed" else None,
                    first_seen=last_seen - timedelta(seconds=rng.randrange(30 * 86400)),
                    last_seen=last_seen,
                    occurrence_count=PER_GROUP,
                    open_count=PER_GROUP if state in ("open", "acknowledged", "snoozed") else 0,
                    closed_at=last_seen if state in ("resolved", "ignored") else None,
                )
            )
        ExceptionGroup.objects.bulk_create(groups)
        occurrences = []
        for group in groups:
            occ_state = "open" if group.open_count else "skipped"
            for i in range(PER_GROUP):
                event = group.pk * PER_GROUP + i
                occurrences.append(
                    Occurrence(
                        group=group,
                        workspace=workspace,
                        event_key=f"event:{event}",
                        stage="stage",
                        message=f"SKU {group.sku} is not in the catalogue",
                        detail={"order_number": f"SO-{event}", "lines": [{"sku": group.sku}]},
                        source_event_id=f"src-{event}",
                        order_number=f"SO-{event}",
                        sku=group.sku,
                        email=f"customer{rng.randrange(EMAILS)}@example.com",
                        state=occ_state,
                        first_seen=group.first_seen,
                        last_seen=group.last_seen - timedelta(seconds=i),
                    )
                )
        Occurrence.objects.bulk_create(occurrences, batch_size=10_000)
        print(f"  … {min(stop, chunk_start + CHUNK):,} groups", end="\r", flush=True)
    with connection.cursor() as cursor:
        # What autovacuum does in production after a load: statistics and the visibility map.
        cursor.execute(
            "VACUUM ANALYZE exceptions_inbox_exceptiongroup, exceptions_inbox_occurrence"
        )
    print()


def median_ms(client: Client, url: str) -> float:
    """Median wall time of the whole request; also notes the queries and their time."""
    for _ in range(3):  # warm caches and the connection
        assert client.get(url).status_code == 200, url
    times, sql = [], []
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
        sql.append(sum(float(q["time"]) for q in queries.captured_queries) * 1000)
    SQL_NOTES[url] = (len(queries.captured_queries), statistics.median(sql))
    return statistics.median(times)


SQL_NOTES: dict[str, tuple[int, float]] = {}


def measure(workspace: Workspace, user: User) -> dict[str, float]:
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    base = f"/w/{workspace.slug}/inbox/"
    email = (
        Occurrence.objects.filter(workspace=workspace, state="open")
        .order_by("-pk")
        .values_list("email", flat=True)
        .first()
    )
    group = ExceptionGroup.objects.filter(workspace=workspace, state="open").order_by("-pk").first()
    assert email and group
    SQL_NOTES.clear()
    pages = {
        "inbox list": median_ms(client, base),
        "filtered list": median_ms(client, f"{base}?tab=open&kind=sku_mapping_gap&team=ops"),
        "search by email": median_ms(client, f"{base}?tab=open&q={email}"),
        "group page": median_ms(client, f"{base}{group.pk}/"),
        "all my workspaces": median_ms(client, "/inbox/?tab=open"),
    }
    for name, (count, ms) in zip(pages, SQL_NOTES.values(), strict=True):
        print(f"  {name:<20} {pages[name]:7.1f} ms, of which SQL {ms:6.1f} ms in {count} queries")
    return pages


def main() -> int:
    check_database()
    rng = random.Random(7)
    with override_settings(
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ):
        workspace, user = reset()
        print(f"Filling {SMALL_GROUPS:,} groups / {SMALL_GROUPS * PER_GROUP:,} occurrences")
        fill(workspace, 0, SMALL_GROUPS, rng)
        measure(workspace, user)  # a first pass warms PostgreSQL and Python; the second counts
        small = measure(workspace, user)
        print(f"Filling to {LARGE_GROUPS:,} groups / {LARGE_GROUPS * PER_GROUP:,} occurrences")
        fill(workspace, SMALL_GROUPS, LARGE_GROUPS, rng)
        large = measure(workspace, user)

    print(f"\nmedian of {RUNS} requests (ms)   at 1/100      at full     ratio")
    failed = False
    for name, small_ms in small.items():
        large_ms = large[name]
        ratio = large_ms / small_ms
        ok = large_ms <= TARGET_MS and ratio <= RATIO
        failed |= not ok
        print(
            f"{name:<28} {small_ms:>10.1f} {large_ms:>12.1f} {ratio:>8.2f}x  {'ok' if ok else 'MISS'}"
        )
    print(f"target: ≤ {TARGET_MS:.0f} ms and ≤ {RATIO}x the 1/100 size")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
