"""What an event costs its table (migration 0011): an event row is updated about five times within
seconds, and the updates that only move a lease must not write a new entry into every index.

- Lease updates (staging's claim, the hand-over to the outbox) are HOT on PostgreSQL: the pages
  keep room for them, and no index names a lease column.
- Staging plans the batch it just staged under the same claim, by key, not by claiming it again
  or reading every READY event (those in the outbox included) for the few not yet planned.
- The webhook's insert reports duplicates of stored events as before (it now returns the ids it
  inserted and reads back only when some were already there).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from monitoring.models import SourceEvent
from monitoring.pipeline import plan
from monitoring.pipeline.claims import claim_ids, worker_token
from monitoring.pipeline.staging.run import run_staging
from tests.factories import make_connection
from tests.monitoring.engine import Source

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="HOT updates and fillfactor are PostgreSQL's"
)


def order(source: Source, n: int) -> dict[str, Any]:
    # A realistic envelope (a dozen lines): an event row is a kilobyte or two, a few to a page.
    lines = [
        {
            "line_key": str(i),
            "sku": f"TEE-{i:02d}-M",
            "quantity": 1,
            "line_total": {"amount": "2.50", "currency": "GBP"},
        }
        for i in range(12)
    ]
    return source.order(
        f"HOT-{n}",
        email=f"hot{n}@example.com",
        total="30.00",
        lines=lines,
        source_event_id=f"hot-{n}",
    )


def hot_updates() -> tuple[int, int]:
    """This transaction's updates of the event table, and how many of them were HOT."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(c.oid), "
            "pg_stat_get_xact_tuples_hot_updated(c.oid) FROM pg_class c "
            "WHERE c.relname = 'monitoring_sourceevent'"
        )
        updated, hot = cursor.fetchone()
    return int(updated), int(hot)


@postgres_only
@pytest.mark.django_db
def test_claiming_events_mostly_writes_no_index_entry(world):
    source = Source(world.workspace, "brightpearl")
    response = source.post({"events": [order(source, n) for n in range(300)]})
    assert response.status_code == 202, response.content
    before = hot_updates()
    ids = claim_ids(
        SourceEvent.objects.due_for_staging().filter(flow=source.flow),
        limit=300,
        owner=worker_token(),
        lease_seconds=60,
    )
    assert len(ids) == 300
    updated, hot = (a - b for a, b in zip(hot_updates(), before, strict=True))
    assert updated == 300
    # A claim moves the lease of every row on a page at once, so a page filled to 70% has room
    # for the new versions of some of its rows (180 of 300 here); filled to 100%, none was HOT.
    assert hot >= 0.4 * updated


@postgres_only
@pytest.mark.django_db
def test_no_index_on_the_event_table_names_a_lease_column():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'monitoring_sourceevent'"
        )
        indexes = cursor.fetchall()
    for name, definition in indexes:
        for column in ("lease_owner", "lease_until", "attempts"):
            assert column not in definition, f"{name} names {column}: lease updates lose HOT"


@pytest.mark.django_db
def test_planning_by_key_plans_only_the_events_named(world, monkeypatch):
    source = Source(world.workspace, "brightpearl")
    response = source.post({"events": [order(source, n) for n in range(4)]})
    assert response.status_code == 202, response.content
    run_staging()
    ready = list(
        SourceEvent.objects.filter(state="ready").order_by("pk").values_list("pk", flat=True)
    )
    assert len(ready) == 4
    planned: list[list[int]] = []
    monkeypatch.setattr(plan, "plan_batch", lambda ids, owner: planned.append(list(ids)) or 0)
    assert plan.run_planning(event_ids=ready[:2]) == 0
    assert planned == [ready[:2]]
    assert plan.run_planning(event_ids=[]) == 0
    assert planned == [ready[:2]]


@pytest.mark.django_db
def test_the_staging_task_plans_the_batch_it_staged_by_key(world, monkeypatch):
    from monitoring import tasks
    from monitoring.pipeline import lanes

    destination = make_connection(world.workspace, "dotdigital", name="DotDigital")
    source = Source(world.workspace, "brightpearl", destination=destination)
    source.post({"events": [order(source, n) for n in range(3)]})
    seen: list[Any] = []
    monkeypatch.setattr(
        lanes,
        "plan_after_staging",
        lambda destination_id, event_ids, owner: seen.append((set(event_ids), owner)) or 0,
    )
    tasks.stage_events(source.flow.pk)
    stored = set(SourceEvent.objects.filter(flow=source.flow).values_list("pk", flat=True))
    assert seen and seen[0][0] == stored
    owner = seen[0][1]
    leased = set(SourceEvent.objects.filter(state="ready").values_list("lease_owner", flat=True))
    assert leased == {owner}, "still leased to the claim that staged them, for its planning"


@pytest.mark.django_db
def test_a_webhook_resent_in_part_answers_duplicates_with_the_stored_ids(world):
    source = Source(world.workspace, "brightpearl")
    first = source.post({"events": [order(source, n) for n in range(3)]}).json()
    again = source.post({"events": [order(source, n) for n in range(2, 5)]}).json()
    ids = {r["source_event_id"]: r for r in first["results"]}
    resent = {r["source_event_id"]: r for r in again["results"]}
    assert resent["hot-2"]["status"] == "duplicate"
    assert resent["hot-2"]["event_id"] == ids["hot-2"]["event_id"]
    assert {resent["hot-3"]["status"], resent["hot-4"]["status"]} == {"accepted"}
    assert SourceEvent.objects.filter(flow=source.flow).count() == 5


@pytest.mark.django_db
def test_a_planned_event_waits_in_the_outbox_out_of_the_planners_sight_until_retried(world):
    from types import SimpleNamespace

    from monitoring.pipeline.confirm import retry_delivery

    destination = make_connection(world.workspace, "dotdigital", name="DotDigital")
    source = Source(world.workspace, "brightpearl", destination=destination)
    source.post({"events": [order(source, 1)]})
    run_staging()
    event = SourceEvent.objects.get(flow=source.flow)
    assert plan.ready_events().filter(pk=event.pk).exists()
    assert plan.run_planning() == 1
    event.refresh_from_db()
    assert (event.state, event.in_outbox, event.lease_owner) == ("ready", True, plan.OUTBOX)
    assert not plan.ready_events().exists()
    assert plan.run_planning() == 0

    # DotDigital rejected it; a person retries it from the inbox: it is planned afresh.
    SourceEvent.objects.filter(pk=event.pk).update(state="failed")
    retry_delivery([SimpleNamespace(event_key=f"event:{event.pk}")])
    event.refresh_from_db()
    assert (event.state, event.in_outbox) == ("ready", False)
    assert list(plan.ready_events().values_list("pk", flat=True)) == [event.pk]
