"""A claim's single-record calls go out together (`sending.each_call`), whichever store holds the
rate budget, and never past it."""

from __future__ import annotations

import threading
import uuid

import pytest

from connectors.budget import Lane, RateBudget, TierLimit
from connectors.dotdigital import errors
from monitoring.pipeline import sending

pytestmark = pytest.mark.django_db


class Client:
    """What each_call needs of a DotDigitalClient: its budget and lane, and a call that takes
    from the budget as the transport does."""

    def __init__(self, budget: RateBudget) -> None:
        self.budget = budget
        self.lane = Lane.REALTIME
        self.threads: set[str] = set()
        self.started = threading.Barrier(2, timeout=5)

    def call(self, item: int) -> int:
        if not self.budget.acquire("single", self.lane):
            raise errors.RateLimited("the single rate budget is spent", retry_after=60.0)
        self.threads.add(threading.current_thread().name)
        if item < 2:
            self.started.wait()  # the first two are in flight together, or this times out
        return item * 10


@pytest.fixture
def budget(budget_backend):
    return RateBudget(
        f"acct:{uuid.uuid4()}", {"single": TierLimit(10, 60.0)}, reserve=0, backend=budget_backend
    )


def test_a_claims_single_calls_are_in_flight_together_within_the_budget(budget):
    client = Client(budget)
    assert sending.each_call(client, client.call, [0, 1, 2, 3]) == [0, 10, 20, 30]
    assert all(name.startswith("dotdigital-single") for name in client.threads)
    assert budget.usage("single") == (4, 10)
    assert client.budget is budget


def test_calls_the_budget_has_no_room_for_come_back_rate_limited_not_sent(budget):
    for _ in range(8):
        assert budget.acquire("single", Lane.REALTIME)
    client = Client(budget)
    client.started = threading.Barrier(1)  # one after another: nothing waits for a partner
    answers = sending.each_call(client, client.call, [5, 6, 7, 8])
    assert sum(isinstance(a, errors.RateLimited) for a in answers) == 2
    assert budget.usage("single") == (10, 10)
