"""Sending one claim's operations: what the writers of each kind (contacts and lists, insight
records, consent) share.

- `Sending` collects each operation's outcome (`Result`); `confirm.record_results` writes them.
- `each_call` makes single-record calls, concurrently when the rate budget allows.
- `handle_error` turns a DotDigital error into outcomes by whose problem it is: a connection
  error pauses the connection and stops the claim (`Paused`), a transient one retries, a record
  error fails the record.
- `record_imports` stores each accepted import as a `DeliveryBatch` for confirmation to poll.

`SYNCDESK_KILL_AT=after_claim|after_send` kills the process at that point (tests of the invariants).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from connectors.budget import Lane, Prepaid, RedisBackend
from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.models import Connection
from monitoring.models import DeliveryBatch, DestinationCache, Operation
from monitoring.pipeline.destination import pause_destination

log = logging.getLogger(__name__)

SINGLE_MAX = (
    20  # single-record calls per kind in one realtime claim, at most; the rest go in imports
)
BATCH_HOLD_SECONDS = 180  # a new import's lease: its sender's claim (a dead sender's runs out)


@dataclass
class Result:
    """What happened to one operation."""

    op_id: int
    outcome: str  # delivered | retry | skipped | failed | sent
    reason: str = ""
    code: str = ""
    text: str = ""
    kind: str = "dotdigital_rejected"  # the exception kind when failed
    retry_after: float | None = None
    contact_id: int | None = None
    batch_id: int | None = None


SINGLE_HEADROOM = 0.1  # share of the single-call tier kept free when choosing single calls
HOLD_SECONDS = 0.3  # a realtime write held back from an import is due again this soon


KILL_ENV = "SYNCDESK_KILL_AT"


def kill_point(name: str) -> None:
    """Die here, abruptly, when SYNCDESK_KILL_AT names this point (tests of the invariants)."""
    if os.environ.get(KILL_ENV) == name:
        log.warning("SYNCDESK_KILL_AT=%s: killing the process", name)
        os._exit(137)


@dataclass
class Sending:
    client: DotDigitalClient
    destination: Connection
    lane: str
    owner: str
    results: list[Result] = field(default_factory=list)
    lists: dict[str, int] = field(default_factory=dict)  # list ids read in this claim
    # Operations this claim may send only as single calls: the realtime lane's next import of
    # their kind is another claim's (`deliver.realtime_import_blocks`).
    singles_only: set[int] = field(default_factory=set)

    def add(self, op: Operation, outcome: str, **kwargs: Any) -> None:
        self.results.append(Result(op.pk, outcome, **kwargs))

    def importable(self, ops: Sequence[Operation]) -> list[Operation]:
        """Of `ops` bound for an import, those this claim may import. The others get no outcome:
        the sender puts them back unsent (no attempt counted), due again in `HOLD_SECONDS`,
        for the lane's next import or the single tier's room."""
        return [op for op in ops if op.pk not in self.singles_only]


def single_room(client: DotDigitalClient, calls: int) -> bool:
    """Whether `calls` single-record calls fit the single tier's window with headroom to spare."""
    return calls <= single_capacity(client)


def single_capacity(client: DotDigitalClient) -> int:
    """How many single-record calls the realtime lane has room for now (paced, headroom kept)."""
    return client.budget.room("single", Lane.REALTIME, headroom=SINGLE_HEADROOM)


SINGLE_THREADS = 8  # single-record calls in flight at once (each waits ~DotDigital's latency)


_pool: ThreadPoolExecutor | None = None


def each_call(
    client: DotDigitalClient,
    call: Callable[[Any], Any],
    items: list[Any],
    tier: str = "single",
) -> list[Any]:
    """`call(item)` for each item of `tier`: its answer, or the DotDigitalError it raised;
    `SINGLE_THREADS` at once, so a claim's calls take about one call's time, not their sum.

    With the budget in Redis the threads take from it call by call (Redis is thread-safe and no
    database is touched). A database budget's rows need this thread's connection: the calls are
    paid for here in one acquire (`budget.Prepaid`) and what the answers said about the window
    is told to it afterwards; when the tier has no room for them all, one after another."""

    def one(item: Any) -> Any:
        try:
            return call(item)
        except errors.DotDigitalError as exc:
            return exc

    if len(items) < 2:
        return [one(item) for item in items]
    if isinstance(client.budget.backend, RedisBackend):
        return _in_pool(one, items)
    budget = client.budget
    prepaid = Prepaid(budget, tier, client.lane, len(items))
    if not prepaid.calls:
        return [one(item) for item in items]
    client.budget = prepaid
    try:
        return _in_pool(one, items)
    finally:
        client.budget = budget
        prepaid.settle()


def _in_pool(one: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    def in_pool(item: Any) -> Any:
        try:
            return one(item)
        finally:
            # The pool's threads outlive the call: a connection one of them opened (the client
            # remembering a discovered region) must not stay open with them.
            connections.close_all()

    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(SINGLE_THREADS, thread_name_prefix="dotdigital-single")
    return list(_pool.map(in_pool, items))


def schema_failure(sending: Sending, op: Operation, problems: list[str]) -> None:
    sending.add(
        op,
        "failed",
        reason="; ".join(problems),
        code="schema_mismatch",
        text="; ".join(problems),
        kind="schema_mismatch",
    )


def record_imports(
    sending: Sending,
    handles: Iterable[Any],
    by_key: dict[str, list[Operation]],
    kind: str,
    collection: str | None,
) -> set[str]:
    """Store each accepted import as a DeliveryBatch; its operations are `sent` in it. The batch
    is leased to the sender until it has recorded those operations as sent (`deliver.send_due`
    lets go): a runner polling a finished import before that would find none of them sent, finish
    the batch, and leave them sent forever."""
    done: set[str] = set()
    now = timezone.now()
    first_poll = first_poll_after(sending.destination.pk, sending.lane, kind) if handles else 0.0
    for handle in handles:
        batch = DeliveryBatch.objects.create(
            lease_owner=sending.owner,
            lease_until=now + timedelta(seconds=BATCH_HOLD_SECONDS),
            workspace_id=sending.destination.workspace_id,
            destination=sending.destination,
            kind=kind,
            lane=sending.lane,
            collection=collection or "",
            import_id=handle.import_id,
            records=len(handle.keys),
            body_bytes=handle.body_bytes,
            submitted_at=now,
            next_attempt_at=now + timedelta(seconds=first_poll),
        )
        for key in handle.keys:
            done.add(key)
            for op in by_key.get(key, []):
                sending.add(op, "sent", batch_id=batch.pk)
    return done


FIRST_POLL_MIN = 0.3  # seconds from sending an import to its first poll, at least
FIRST_POLL_SHARE = 0.75  # of the quickest recent import's time to seen finished
FIRST_POLL_SAMPLE = 10  # recent imports of a destination, lane and kind to learn from


def first_poll_after(destination_id: int, lane: str, kind: str) -> float:
    """Seconds until a new import's first poll: three quarters of the quickest of the last few
    imports of its destination, lane and kind took to be seen finished. DotDigital takes about
    a second for a realtime import's few hundred records (longer on a busy day, far longer for a
    backfill's): polled from 0.3 s, most were seen finished at the third or fourth poll, each a
    call in the runner's loop. A share, not a margin: a time seen finished includes the loop's
    lag, and a first poll just short of it would creep later with each import; three quarters
    comes before DotDigital finishes unless that lag is a third of its time."""
    recent = list(
        DeliveryBatch.objects.filter(
            destination_id=destination_id, lane=lane, kind=kind, finished_at__isnull=False
        )
        .order_by("-pk")
        .values_list("submitted_at", "finished_at")[:FIRST_POLL_SAMPLE]
    )
    if not recent:
        return FIRST_POLL_MIN
    quickest = min(
        (finished - submitted).total_seconds() for submitted, finished in recent if finished
    )
    return max(FIRST_POLL_MIN, FIRST_POLL_SHARE * quickest)


def handle_error(sending: Sending, ops: Sequence[Operation], exc: errors.DotDigitalError) -> bool:
    """Outcomes of `ops` after an error; True when the whole claim must stop (connection)."""
    if isinstance(exc, errors.ConnectionProblem):
        for op in ops:
            sending.add(op, "retry", reason=errors.explain(exc), retry_after=1.0, code=exc.code)
        pause_destination(sending.destination.pk, exc)
        raise Paused(exc)
    if isinstance(exc, errors.RetryableError):
        for op in ops:
            sending.add(
                op,
                "retry",
                reason=errors.explain(exc),
                code=exc.code,
                text=exc.text,
                retry_after=exc.retry_after,
            )
        return False
    for op in ops:
        kind = (
            "schema_mismatch" if isinstance(exc, errors.SchemaMismatch) else "dotdigital_rejected"
        )
        if isinstance(exc, errors.DataFieldError):
            DestinationCache.objects.filter(
                destination_id=sending.destination.pk, name="data_fields"
            ).delete()
        sending.add(
            op,
            "failed",
            reason=exc.message,
            code=exc.code or str(exc.status or ""),
            text=exc.text,
            kind=kind,
        )
    return False


class Paused(Exception):
    """The connection was paused while sending: stop this claim (its outcomes are recorded)."""
