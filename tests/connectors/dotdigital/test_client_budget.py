"""Two clients in two processes share one DotDigital rate budget and never meet a 429."""

from __future__ import annotations

import uuid

import pytest

from tests.connectors.budget_worker import run_workers, worker_env


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_clients_in_two_processes_share_one_rate_budget_without_a_429(tmp_path, sandbox):
    sandbox.set_profile(base="fast", window_s=3600, tier_limits={"single": 40})
    env = worker_env(tmp_path)
    results = run_workers(
        tmp_path,
        env,
        2,
        key=f"mp:{uuid.uuid4()}",
        limit=40,
        window=3600.0,
        attempts=35,
        tiers=["single", "import", "status", "read", "enrolment"],
        sandbox=sandbox.url,
        user=sandbox.auth[0],
        password=sandbox.auth[1],
    )
    calls = [c for c in sandbox.calls() if c["tier"] == "single"]
    assert [c["status"] for c in calls if c["status"] == 429] == []
    assert sum(r["granted"] for r in results) == len(calls)
    per_window: dict[int, int] = {}
    for call in calls:
        per_window[int(call["epoch"] // 3600)] = per_window.get(int(call["epoch"] // 3600), 0) + 1
    assert max(per_window.values()) <= 40
    assert all(r["granted"] > 0 and r["refused"] > 0 for r in results) or len(per_window) > 1
