"""Delivery in real worker processes (`manage.py run_delivery`) on PostgreSQL: killed at a named
point (SYNCDESK_KILL_AT), nothing is lost or duplicated; two workers never send one operation
twice."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from monitoring.models import Operation, SourceEvent
from monitoring.pipeline.audit import audit
from monitoring.pipeline.deliver import claim_operations
from monitoring.pipeline.plan import run_planning
from monitoring.pipeline.staging.run import run_staging
from tests.connectors.budget_worker import worker_env
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_delivery import order_created

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("worker processes share the test database only on PostgreSQL")


def run_worker(engine: Engine, tmp_path: Path, *, kill_at: str = "", lane: str = "realtime"):
    env = worker_env(tmp_path)
    if kill_at:
        env["SYNCDESK_KILL_AT"] = kill_at
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_delivery",
            "--destination",
            str(engine.destination.pk),
            "--lane",
            lane,
            "--seconds",
            "60",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expire_leases() -> None:
    """The lease runs out (moved, not waited for)."""
    Operation.objects.filter(state="sending").update(
        lease_until=datetime.now(UTC) - timedelta(seconds=1)
    )


def test_a_worker_killed_after_its_claim_leaves_operations_reclaimed_when_the_lease_expires(
    engine: Engine, tmp_path: Path
):
    engine.post("erp", [order_created("NK1", "kay@example.com", "10.00", at=datetime.now(UTC))])
    run_staging()
    run_planning()

    worker = run_worker(engine, tmp_path, kill_at="after_claim")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 137, err
    claimed = Operation.objects.get(kind="contact")
    assert claimed.state == "sending" and claimed.lease_owner
    assert engine.contact("kay@example.com") is None

    # The lease has not run out: nothing is taken from the dead worker yet.
    assert claim_operations(engine.destination.pk, "realtime", "another", 100) == []
    expire_leases()
    engine.pump()

    op = Operation.objects.get(pk=claimed.pk)
    assert op.state == "delivered" and op.attempts == 2
    assert SourceEvent.objects.get().state == "delivered"


def test_a_worker_killed_after_dotdigital_answered_leaves_one_contact_and_one_record(
    engine: Engine, tmp_path: Path
):
    engine.post("erp", [order_created("NK2", "kit@example.com", "10.00", at=datetime.now(UTC))])
    run_staging()
    run_planning()

    worker = run_worker(engine, tmp_path, kill_at="after_send")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 137, err
    assert engine.contact("kit@example.com") is not None  # DotDigital has it; we never recorded it
    assert Operation.objects.get(kind="contact").state == "sending"

    expire_leases()
    engine.pump()

    state = engine.sandbox.state()
    assert [c["identifiers"]["email"] for c in state["contacts"]] == ["kit@example.com"]
    assert set(engine.records("kit@example.com")) == {"NK2"}
    assert state["counts"]["records"] == 1
    report = audit()
    assert report.outside == []
    assert report.counts["delivered"] == 1


def test_two_workers_on_postgresql_never_send_one_operation_twice(engine: Engine, tmp_path: Path):
    now = datetime.now(UTC)
    engine.post(
        "erp",
        [
            order_created(f"NW{i}", f"w{i}@example.com", "3.00", at=now, customer=f"W{i}")
            for i in range(80)
        ],
    )
    run_staging()
    run_planning()
    total = Operation.objects.count()

    workers = [run_worker(engine, tmp_path, lane="realtime") for _ in range(2)]
    outputs = [w.communicate(timeout=180) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    engine.pump()

    assert Operation.objects.filter(state="delivered").count() == total
    # Every claim counts an attempt: one each means no operation was ever held by both.
    assert set(Operation.objects.values_list("attempts", flat=True)) == {1}
    counts = engine.sandbox.state()["counts"]
    assert (counts["contacts"], counts["records"]) == (80, 80)
    for out, _ in outputs:
        json.loads(out.strip().splitlines()[-1])  # each worker ran to its end
    assert SourceEvent.objects.filter(state="delivered").count() == 80
