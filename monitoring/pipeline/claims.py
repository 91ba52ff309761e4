"""Claiming rows: `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, a conditional UPDATE on SQLite
(whose IMMEDIATE transactions already serialise writers). A claim is a lease: a worker that dies
mid-batch leaves rows whose lease expires, and the sweeper finds them again."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone


def worker_token() -> str:
    """A lease owner unique to this claim (host, pid and a random part)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_ids(
    queryset: models.QuerySet[Any], *, limit: int, owner: str, lease_seconds: int
) -> list[int]:
    """Lease up to `limit` rows of `queryset` (already filtered to due, unleased rows) to `owner`
    and return their ids."""
    now = timezone.now()
    until = now + timedelta(seconds=lease_seconds)
    model = queryset.model
    with transaction.atomic():
        if connection.vendor == "postgresql":
            ids = list(
                queryset.select_for_update(skip_locked=True, of=("self",)).values_list(
                    "pk", flat=True
                )[:limit]
            )
            if ids:
                model._default_manager.filter(pk__in=ids).update(
                    lease_owner=owner, lease_until=until, attempts=F("attempts") + 1
                )
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
