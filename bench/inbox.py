"""The inbox at size: a workspace of 100,000 groups / 1,000,000 occurrences against one of 1/100.

Fills both with bulk_create on PostgreSQL and prints the median time of five pages, each as a
signed-in admin of that workspace (the whole request: view, queries and template): the inbox list
(default tab), a filtered list (kind + team), a search by email (over groups and their
occurrences), a group page and the inbox across the person's workspaces. The two sizes are timed
in turn, request by request, so load from elsewhere on the machine weighs on both alike. Target:
each at most 250 ms, and at most 1.5x its time at 1/100 of the size.

It empties the inbox tables of the database it is given, so it refuses any database whose name
does not start with "bench":

    psql -h 127.0.0.1 -U postgres -c 'create database bench_inbox'
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_inbox .venv/bin/python bench/inbox.py

`--groups N` sets the full size (a quick check of the bench itself, not a figure to quote).
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


def reset() -> list[tuple[Workspace, User]]:
    """Two workspaces in one database, each with its own admin: "bench-small" (1/100) and
    "bench" (the full size)."""
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE exceptions_inbox_occurrence, exceptions_inbox_activity, "
            "exceptions_inbox_assignmentnotice, exceptions_inbox_exceptiongroup, "
            "exceptions_inbox_knownflow CASCADE"
        )
    made = []
    for slug, name in (("bench-small", "Bench small"), ("bench", "Bench retail")):
        workspace = Workspace.objects.filter(slug=slug).first() or Workspace.objects.create(
            name=name, slug=slug
        )
        user = User.objects.filter(username=slug).first() or User.objects.create_user(slug)
        workspace.add_member(user, role="admin", teams=("ops",))
        for key, label in FLOWS:
            KnownFlow.objects.get_or_create(workspace=workspace, flow_key=key, flow_label=label)
        made.append((workspace, user))
    return made


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


def pages_of(workspace: Workspace) -> dict[str, str]:
    base = f"/w/{workspace.slug}/inbox/"
    email = (
        Occurrence.objects.filter(workspace=workspace, state="open")
        .order_by("-pk")
        .values_list("email", flat=True)
        .first()
    )
    # The same kind at both sizes: the page's cost depends on the kind's hooks (how the engine
    # renders a blocked event), and a SKU gap is the example.
    group = (
        ExceptionGroup.objects.filter(workspace=workspace, state="open", kind="sku_mapping_gap")
        .order_by("-pk")
        .first()
    )
    assert email and group
    return {
        "inbox list": base,
        "filtered list": f"{base}?tab=open&kind=sku_mapping_gap&team=ops",
        "search by email": f"{base}?tab=open&q={email}",
        "group page": f"{base}{group.pk}/",
        "all my workspaces": "/inbox/?tab=open",
    }


def timed(client: Client, url: str) -> tuple[float, float, int]:
    """Wall time of the whole request, and the time and number of its queries (ms, ms, n)."""
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url)
        wall = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, url
    sql = sum(float(q["time"]) for q in queries.captured_queries) * 1000
    return wall, sql, len(queries.captured_queries)


def measure(sizes: list[tuple[Workspace, User]]) -> list[dict[str, float]]:
    """Median per page and size. The sizes are timed in turn, request by request, so a machine
    whose load changes during the run (CI, a shared box) weighs on both alike."""
    clients = []
    for workspace, user in sizes:
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        clients.append((client, pages_of(workspace)))
    results: list[dict[str, float]] = [{} for _ in sizes]
    for name in clients[0][1]:
        samples: list[list[tuple[float, float, int]]] = [[] for _ in sizes]
        for run in range(3 + RUNS):  # the first three warm caches and connections
            for i, (client, pages) in enumerate(clients):
                sample = timed(client, pages[name])
                if run >= 3:
                    samples[i].append(sample)
        for i, runs in enumerate(samples):
            results[i][name] = statistics.median(s[0] for s in runs)
            sql = statistics.median(s[1] for s in runs)
            print(
                f"  {sizes[i][0].slug:<12} {name:<18} {results[i][name]:7.1f} ms, "
                f"SQL {sql:6.1f} ms in {runs[-1][2]} queries"
            )
    return results


def main() -> int:
    global LARGE_GROUPS, SMALL_GROUPS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--groups",
        type=int,
        default=LARGE_GROUPS,
        help=f"groups at the full size (default {LARGE_GROUPS:,}; the small size is 1/100)",
    )
    LARGE_GROUPS = parser.parse_args().groups
    SMALL_GROUPS = max(1, LARGE_GROUPS // 100)
    check_database()
    rng = random.Random(7)
    with override_settings(
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ):
        small_size, full_size = reset()
        print(f"Filling {SMALL_GROUPS:,} groups / {SMALL_GROUPS * PER_GROUP:,} occurrences")
        fill(small_size[0], 0, SMALL_GROUPS, rng)
        print(f"Filling {LARGE_GROUPS:,} groups / {LARGE_GROUPS * PER_GROUP:,} occurrences")
        fill(full_size[0], SMALL_GROUPS, SMALL_GROUPS + LARGE_GROUPS, rng)
        print("load average before timing: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        small, large = measure([small_size, full_size])
        print("load average after timing:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

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
