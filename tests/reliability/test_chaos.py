"""The CI-sized chaos run (issue 12): 1,000 events through the real stack (gunicorn, a realtime and
a bulk Celery worker, beat, a private Redis, the DotDigital sandbox) on PostgreSQL, with the
same kinds of fault as `bench/chaos.py`'s 10,000-event run: sandbox 5xx, 429 and 429 storms,
hangs past short client timeouts, dropped connections; duplicate and reordered deliveries; three
SIGKILLed workers; a broker restart that loses its messages; a sandbox restart. DotDigital's final
state must equal the generator's ground truth and the audit must pass.

Skipped (with the reason) when PostgreSQL does not answer on 127.0.0.1 (`CHAOS_PG`) or
`redis-server` is not installed. Nothing here asserts on time; every wait in the harness is
bounded.
"""

from __future__ import annotations

import os
import shutil

import pytest

from bench.chaos import ChaosConfig, postgres_answers, run

pytestmark = pytest.mark.slow


def _config(**overrides: object) -> ChaosConfig:
    pg = os.environ.get("CHAOS_PG", "postgresql://postgres@127.0.0.1:5432")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the chaos run starts a private Redis broker")
    if shutil.which("psql") is None or not postgres_answers(pg):
        pytest.skip(f"PostgreSQL does not answer at {pg} (set CHAOS_PG): the chaos run needs it")
    return ChaosConfig(pg=pg, log=lambda line: None, **overrides)  # type: ignore[arg-type]


def test_a_thousand_events_under_chaos_arrive_once_and_exactly(tmp_path: object) -> None:
    config = _config(
        events=1000,
        customers=400,
        database=f"chaos_ci_{os.getpid()}",
        post_rate=30.0,
        faults_in_drain=45.0,
        drain_timeout=420.0,
    )
    result = run(config)
    summary = result.summary()
    lost, duplicated, mismatched = result.comparison.totals
    assert (lost, duplicated, mismatched) == (0, 0, 0), summary
    assert result.audit_rc == 0, summary
    assert result.comparison.checked["orders"] > 100, summary
    assert result.comparison.checked["enrolments"] > 0, summary
    assert result.comparison.checked["list memberships"] > 0, summary
    assert sum(result.sandbox_faults.values()) > 0, summary  # the faults did hit delivery
    assert len([a for a in result.actions if "SIGKILLed worker" in a]) == 3, summary


def test_the_chaos_comparison_can_fail_each_way() -> None:
    """Self-check: one event not posted → 1 lost; one enrolment sent twice → 1 duplicated; one
    order total altered in DotDigital → 1 mismatched. The audit still passes: only the truth,
    which does not share the engine's code, sees these."""
    config = _config(
        events=250,
        customers=300,
        database=f"chaos_self_{os.getpid()}",
        chaos=False,
        self_check=True,
        drain_timeout=300.0,
    )
    result = run(config)
    summary = result.summary()
    assert result.comparison.totals == (1, 1, 1), summary
    assert dict(result.comparison.lost) == {"contact": 1}, summary
    assert dict(result.comparison.duplicated) == {"enrolment": 1}, summary
    assert dict(result.comparison.mismatched) == {"order": 1}, summary
    assert result.audit_rc == 0, summary
