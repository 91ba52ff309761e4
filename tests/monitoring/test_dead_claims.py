"""A killed worker's claims come back within a sweep, not when their lease runs out (PostgreSQL).

A claim's owner holds a session lock on its token from the claim's commit until its work is done
(`claims.working`); a worker that dies loses its connection and the lock with it. The sweeper
ends the leases of owners holding no lock (`lanes.free_dead_claims_everywhere`), so staging's and
planning's two-minute leases no longer hold a dispatch back after a worker is killed.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import connection

from monitoring.models import SourceEvent
from monitoring.pipeline.claims import LIVE_LOCK, _key, claim_ids, worker_token, working
from monitoring.pipeline.lanes import free_dead_claims_everywhere, wake_due_staging
from tests.monitoring.engine import Source

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the locks are PostgreSQL's"),
]


def post_orders(world: Any, n: int) -> Source:
    source = Source(world.workspace, "brightpearl")
    events = [
        source.order(f"DEAD-{i}", email=f"dead{i}@example.com", source_event_id=f"dead-{i}")
        for i in range(n)
    ]
    assert source.post({"events": events}).status_code == 202
    return source


def claim(source: Source, owner: str) -> list[int]:
    return claim_ids(
        SourceEvent.objects.due_for_staging().filter(flow=source.flow),
        limit=100,
        owner=owner,
        lease_seconds=120,
    )


def due(source: Source) -> int:
    return SourceEvent.objects.due_for_staging().filter(flow=source.flow).count()


def locked(owner: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objid = %s AND objsubid = 2",
            [LIVE_LOCK, _key(owner) & 0xFFFFFFFF],
        )
        return bool(cursor.fetchone()[0])


def test_a_claim_whose_worker_is_at_work_keeps_its_lease(world):
    source = post_orders(world, 3)
    owner = worker_token()
    with working(owner):
        assert len(claim(source, owner)) == 3
        assert locked(owner)
        assert free_dead_claims_everywhere() == 0
        assert due(source) == 0
    assert not locked(owner)


def test_a_claim_whose_worker_died_is_let_go_by_the_next_sweep(world):
    source = post_orders(world, 3)
    owner = worker_token()
    worker = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        host=connection.settings_dict["HOST"] or None,
        port=connection.settings_dict["PORT"] or None,
        user=connection.settings_dict["USER"] or None,
        autocommit=True,
    )
    worker.execute("SELECT pg_advisory_lock(%s, %s)", [LIVE_LOCK, _key(owner)])
    assert len(claim(source, owner)) == 3
    wake_due_staging()
    assert due(source) == 0  # the worker, in another session, is alive
    worker.close()  # killed: its connection, and its lock, are gone
    wake_due_staging()
    assert due(source) == 3


def test_a_claim_outliving_its_work_is_let_go(world):
    source = post_orders(world, 2)
    owner = worker_token()
    with working(owner):
        claim(source, owner)
    assert free_dead_claims_everywhere() == 2
    assert due(source) == 2


def test_a_claim_that_takes_nothing_takes_no_lock(world):
    source = post_orders(world, 1)
    owner = worker_token()
    claim(source, "someone-else")
    with working(owner):
        assert claim(source, owner) == []
        assert not locked(owner)


def test_a_claim_takes_the_first_due_rows_in_the_queue_order_and_leases_them(world):
    source = post_orders(world, 5)
    first = list(
        SourceEvent.objects.due_for_staging()
        .filter(flow=source.flow)
        .order_by("-pk")
        .values_list("pk", flat=True)[:3]
    )
    owner = worker_token()
    ids = claim_ids(
        SourceEvent.objects.due_for_staging().filter(flow=source.flow).order_by("-pk"),
        limit=3,
        owner=owner,
        lease_seconds=120,
    )
    assert ids == sorted(first)
    leased = SourceEvent.objects.filter(lease_owner=owner)
    assert sorted(leased.values_list("pk", flat=True)) == ids
    assert set(leased.values_list("attempts", flat=True)) == {1}
    assert due(source) == 2


def test_a_claim_picks_and_leases_in_one_statement(world):
    from django.test.utils import CaptureQueriesContext

    source = post_orders(world, 4)
    owner = worker_token()
    with working(owner), CaptureQueriesContext(connection) as queries:
        assert len(claim(source, owner)) == 4
    statements = [
        q["sql"] for q in queries.captured_queries if "monitoring_sourceevent" in q["sql"]
    ]
    assert len(statements) == 1
    assert statements[0].startswith("UPDATE") and "SKIP LOCKED" in statements[0]


@pytest.mark.django_db(transaction=True)  # the other worker sees the committed events
def test_two_claims_at_once_never_take_the_same_row(world):
    source = post_orders(world, 6)
    other = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        host=connection.settings_dict["HOST"] or None,
        port=connection.settings_dict["PORT"] or None,
        user=connection.settings_dict["USER"] or None,
    )
    with other.cursor() as cursor:  # another worker's claim, still open: its rows are locked
        cursor.execute(
            "SELECT id FROM monitoring_sourceevent WHERE flow_id = %s ORDER BY id LIMIT 2 "
            "FOR UPDATE",
            [source.flow.pk],
        )
        held = {row[0] for row in cursor.fetchall()}
        ids = claim(source, worker_token())
    other.rollback()
    other.close()
    assert len(ids) == 4
    assert not held & set(ids)
