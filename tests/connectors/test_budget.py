"""The shared rate budget: lanes, waits, header corrections, import slots, and many processes."""

from __future__ import annotations

import uuid

import pytest

from connectors.budget import (
    ConcurrencyCap,
    Lane,
    Prepaid,
    RateBudget,
    TierLimit,
)
from tests.conftest import REDIS_URL, redis_answers
from tests.connectors.budget_worker import run_workers, worker_env


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backend(budget_backend):
    return budget_backend


def budget_for(backend, clock, limit=10, window=60.0, reserve=0.2):
    return RateBudget(
        "acct", {"t": TierLimit(limit, window)}, reserve=reserve, backend=backend, clock=clock
    )


def take(budget, lane, n=100):
    return sum(1 for _ in range(n) if budget.acquire("t", lane))


def test_the_bulk_lane_leaves_the_reserved_share_to_the_realtime_lane(backend):
    clock = Clock()
    budget = budget_for(backend, clock, limit=10, reserve=0.2)
    assert take(budget, Lane.BULK) == 8
    assert take(budget, Lane.REALTIME) == 2
    assert budget.usage("t") == (10, 10)


def test_a_paced_budget_opens_the_realtime_lanes_window_evenly_and_says_when_room_comes(backend):
    clock = Clock(1_800_000_000.0)  # a 60 s window starts
    budget = RateBudget(
        "acct", {"t": TierLimit(600, 60.0)}, reserve=0.2, pace=0.1, backend=backend, clock=clock
    )
    assert budget.room("t", Lane.REALTIME) == 60
    assert take(budget, Lane.REALTIME, 100) == 60, "a tenth of the window at its start"
    refused = budget.acquire("t", Lane.REALTIME)
    assert not refused and refused.wait == pytest.approx(0.1), "not the window's end: 59.9 s"
    clock.now += 30  # half way: half the window is open, less what was used
    assert budget.room("t", Lane.REALTIME) == 360 - 60
    assert take(budget, Lane.REALTIME, 1000) == 300
    clock.now += 29.9
    assert take(budget, Lane.REALTIME, 1000) == 600 - 360
    # The bulk lane is paced within its share (480 of 600), so it never spends a window's start.
    clock.now += 0.1  # the next window starts
    assert take(budget, Lane.BULK, 1000) == 48
    assert budget.room("t", Lane.REALTIME) == 60 - 48
    assert budget.room("t", Lane.BULK) == 0


def test_a_refusal_says_how_long_until_the_window_has_room(backend):
    clock = Clock(1_800_000_030.0)  # half way through a 60 s window
    budget = budget_for(backend, clock, limit=2, reserve=0)
    assert budget.acquire("t") and budget.acquire("t")
    refused = budget.acquire("t")
    assert not refused and refused.wait == pytest.approx(30.0)
    clock.now += 30
    assert budget.acquire("t")


def test_the_answers_headers_correct_the_shared_view(backend):
    clock = Clock(1_800_000_010.0)
    budget = budget_for(backend, clock, limit=100, reserve=0)
    assert budget.acquire("t")
    # Another client of the account has been busy: the server has 2 calls left this window.
    budget.observe_headers(
        "t",
        {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "2",
            "X-RateLimit-Reset": "1800000060",
        },
    )
    assert take(budget, Lane.REALTIME) == 2
    assert budget.usage("t") == (50, 50)
    # An answer from an older window changes no count.
    budget.observe_headers(
        "t",
        {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": "1800000000",
        },
    )
    assert budget.usage("t") == (50, 50)


def test_a_server_window_ahead_of_ours_moves_ours(backend):
    clock = Clock(1_800_000_010.0)
    budget = budget_for(backend, clock, limit=10, reserve=0)
    budget.acquire("t")
    budget.observe(
        "t", limit=10, remaining=0, reset_at=1_800_000_095.0
    )  # the server's window runs 35 s past ours
    refused = budget.acquire("t")
    assert not refused and refused.wait == pytest.approx(85.0)


def test_brightpearls_headers_are_understood(backend):
    clock = Clock(1_800_000_000.0)
    budget = RateBudget("bp", {"t": TierLimit(200, 60.0)}, reserve=0, backend=backend, clock=clock)
    budget.acquire("t")
    budget.observe_headers(
        "t", {"Brightpearl-Requests-Remaining": "0", "Brightpearl-Next-Throttle-Period": "23329"}
    )
    refused = budget.acquire("t")
    assert not refused and refused.wait == pytest.approx(23.329)


def test_a_block_after_a_429_holds_every_lane_until_it_ends(backend):
    clock = Clock()
    budget = budget_for(backend, clock, limit=100)
    budget.block("t", 12.5)
    assert budget.acquire("t", Lane.REALTIME).wait == pytest.approx(12.5)
    budget.block("t", 3)  # a shorter block never shortens a longer one
    assert budget.acquire("t", Lane.BULK).wait == pytest.approx(12.5)
    clock.now += 12.5
    assert budget.acquire("t", Lane.BULK)


def test_prepaid_calls_are_counted_once_up_front_and_never_exceeded(backend):
    clock = Clock()
    budget = budget_for(backend, clock, limit=10, reserve=0)
    prepaid = Prepaid(budget, "t", Lane.REALTIME, 4)
    assert prepaid.calls == 4 and budget.usage("t") == (4, 10)
    assert take(prepaid, Lane.REALTIME) == 4
    refused = prepaid.acquire("t", Lane.REALTIME)
    assert not refused and refused.wait >= 60  # spent: the caller sends the write another way
    assert budget.usage("t") == (4, 10)  # the calls were counted when paid, never again


def test_a_budget_without_room_for_every_call_prepays_none(backend):
    budget = budget_for(backend, Clock(), limit=3, reserve=0)
    prepaid = Prepaid(budget, "t", Lane.REALTIME, 4)
    assert prepaid.calls == 0 and budget.usage("t") == (0, 3)


def test_what_the_prepaid_calls_heard_is_told_to_the_budget_on_settling(backend):
    clock = Clock(1_800_000_010.0)
    budget = budget_for(backend, clock, limit=100, reserve=0)
    prepaid = Prepaid(budget, "t", Lane.REALTIME, 5)
    headers = {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "2"}
    prepaid.observe_headers("t", {**headers, "X-RateLimit-Reset": "1800000060"})
    prepaid.block("t", 3.0)
    # A 429 holds the other threads' calls at once...
    assert not prepaid.acquire("t", Lane.REALTIME) and budget.usage("t") == (5, 100)
    # ...and the budget hears of it, and of the count, once the calls are done.
    prepaid.settle()
    assert budget.usage("t") == (48, 50)
    assert not budget.acquire("t", Lane.REALTIME)
    clock.now += 3.5
    assert budget.acquire("t", Lane.REALTIME)


def test_an_unknown_tier_is_a_programming_error(backend):
    with pytest.raises(ValueError, match="no rate tier"):
        budget_for(backend, Clock()).acquire("nope")


def test_import_slots_are_capped_freed_and_expire(backend):
    clock = Clock()
    cap = ConcurrencyCap("acct", "imports:insight", 5, ttl=600, backend=backend, clock=clock)
    assert all(cap.claim(f"pending-{n}") for n in range(5))
    assert not cap.claim("pending-5")
    assert cap.claim("pending-0")  # a holder renewing its own lease
    assert cap.rename("pending-0", "import-a")
    assert cap.in_use() == 5
    cap.release("import-a")
    assert cap.claim("pending-5") and not cap.claim("pending-6")
    clock.now += 601  # a worker died holding its slots: the leases run out
    assert cap.in_use() == 0 and cap.claim("pending-6")


# -- many processes -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["db", "redis"])
def test_two_processes_sharing_a_budget_never_take_more_than_its_limit(tmp_path, store):
    if store == "redis" and not redis_answers:
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    env = worker_env(tmp_path)
    # A window of an hour: the test never straddles a reset it could not see coming.
    args = {"key": f"mp:{uuid.uuid4()}", "limit": 150, "window": 3600.0, "attempts": 200}
    args["tiers"] = ["t"]
    if store == "redis":
        args |= {"redis": REDIS_URL, "prefix": f"test:{uuid.uuid4()}"}
    results = run_workers(tmp_path, env, 2, **args)
    granted = [r["granted"] for r in results]
    assert sum(granted) <= 150 * 2  # at most two windows, if an hour turned during the run
    assert sum(granted) in (150, 300) or min(granted) > 0
    assert all(r["granted"] + r["refused"] == 200 for r in results)
    assert sum(granted) >= 150
