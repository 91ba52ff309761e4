"""Claiming rows: `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, a conditional UPDATE on SQLite
(whose IMMEDIATE transactions already serialise writers). A claim is a lease: a worker that dies
mid-batch leaves rows whose lease expires, and the sweeper finds them again.

On PostgreSQL a claim's owner also holds a session lock on its token while it works on what it
claimed (`working`, `hold`). A worker that dies loses its connection and with it the lock, so the
sweepers end its leases within seconds (`free_dead_claims`) rather than when they run out: a
lease must outlast the slowest batch, minutes, and a killed worker held that much work back."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

log = logging.getLogger(__name__)

LIVE_LOCK = 0x4C495645  # advisory lock class: "the owner of this token is at work on its claim"


def worker_token() -> str:
    """A lease owner unique to this claim (host, pid and a random part)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_ids(
    queryset: models.QuerySet[Any], *, limit: int, owner: str, lease_seconds: int
) -> list[int]:
    """Lease up to `limit` rows of `queryset` (already filtered to due, unleased rows) to `owner`
    and return their ids, in ascending order."""
    now = timezone.now()
    until = now + timedelta(seconds=lease_seconds)
    model = queryset.model
    with transaction.atomic():
        if connection.vendor == "postgresql":
            ids = _lease_picked(queryset, limit, owner, until)
            if ids:
                hold(owner)
            return ids
        candidates = list(queryset.values_list("pk", flat=True)[:limit])
        if not candidates:
            return []
        model._default_manager.filter(pk__in=candidates).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        ).update(lease_owner=owner, lease_until=until, attempts=F("attempts") + 1)
        return list(
            model._default_manager.filter(pk__in=candidates, lease_owner=owner).values_list(
                "pk", flat=True
            )
        )


def _lease_picked(
    queryset: models.QuerySet[Any], limit: int, owner: str, until: datetime
) -> list[int]:
    """PostgreSQL: pick and lease in one statement (`UPDATE … WHERE pk IN (SELECT … FOR UPDATE
    SKIP LOCKED LIMIT n) RETURNING pk`), the queue's usual form: the picked ids never travel to
    us and back as a list of a few hundred parameters, which Django and psycopg build and parse
    at some cost on every claim of a batch."""
    model = queryset.model
    picked = queryset.select_for_update(skip_locked=True, of=("self",)).values("pk")[:limit]
    inner, params = picked.query.sql_with_params()
    quote = connection.ops.quote_name
    pk = quote(model._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(model._meta.db_table)} SET lease_owner = %s, lease_until = %s, "
            f"attempts = attempts + 1 WHERE {pk} IN ({inner}) RETURNING {pk}",
            [owner, until, *params],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _key(owner: str) -> int:
    """The owner's lock key: its CRC-32, as PostgreSQL's signed int4 (pg_locks shows it unsigned).
    Two owners sharing a key only keep a dead one's claims until their lease runs out."""
    value = zlib.crc32(owner.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


_local = threading.local()  # the owners this thread works for: {owner: whether it holds the lock}


@contextmanager
def working(owner: str) -> Iterator[None]:
    """Claim and work on the claim as `owner`: on PostgreSQL the first claim that takes rows
    also takes `owner`'s lock, before it commits (so no lease of `owner` is ever seen without
    it), and the lock is let go here, after the work. A claim that takes nothing locks nothing."""
    if connection.vendor != "postgresql":
        yield
        return
    owners = _local.__dict__.setdefault("owners", {})
    owners[owner] = False
    try:
        yield
    finally:
        if owners.pop(owner, False):
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LIVE_LOCK, _key(owner)])
            except DatabaseError:  # the connection is gone, and the lock with it
                log.debug("letting go of %s's lock", owner, exc_info=True)


def hold(owner: str) -> None:
    """Inside a claim's transaction, once it has taken rows: lock `owner` if it is working."""
    owners = _local.__dict__.get("owners", {})
    if owners.get(owner) is False:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [LIVE_LOCK, _key(owner)])
        owners[owner] = True


def free_dead_claims(leased: models.QuerySet[Any]) -> int:
    """PostgreSQL: end the leases among `leased` (rows claimed and leased to some owner) whose
    owner no longer holds its lock: its worker died, or let go without clearing them. Returns
    how many rows were let go."""
    if connection.vendor != "postgresql":
        return 0
    owners = set(leased.exclude(lease_owner="").order_by().values_list("lease_owner", flat=True))
    if not owners:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objsubid = 2",
            [LIVE_LOCK],
        )
        live = {int(row[0]) for row in cursor.fetchall()}
    dead = [owner for owner in owners if _key(owner) & 0xFFFFFFFF not in live]
    if not dead:
        return 0
    freed = leased.filter(lease_owner__in=dead).update(lease_until=timezone.now())
    if freed:
        log.info("let go of %s rows claimed by %s workers no longer at work", freed, len(dead))
    return int(freed)
