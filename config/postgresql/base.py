"""Django's PostgreSQL backend, reading `timestamptz` with psycopg's compiled loader.

Django gives every psycopg 3 connection its own timestamptz loader, a Python subclass of psycopg's
pure-Python one, so that it can set the value's tzinfo; psycopg's C loader cannot be subclassed.
That loader parses each value with a regular expression: 6–11 µs a value against about 1 µs for the
C loader (`bench/timestamps.py`). The engine reads several timestamps of every event, operation
and link it touches (planning some fifteen an event), so it was a few per cent of a worker's CPU.

With `USE_TZ` and the database's time zone left to Django (UTC), Django sets the session's
`TimeZone` to UTC as it connects, and the C loader then returns the same aware datetimes in UTC
(`datetime.timezone.utc`). Any other setting keeps Django's loader.
"""

from __future__ import annotations

import datetime
from functools import cache
from typing import Any

from django.db.backends.postgresql import base
from psycopg import adapt, adapters
from psycopg.pq import Format

_TIMESTAMPTZ_OID = adapters.types["timestamptz"].oid
_COMPILED = adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)


class UtcTimestamptzLoader(adapt.Loader):
    """Hands each instance psycopg's own loader's `load`: psycopg calls a loader's `load`
    attribute, so each value is one call into C. `timezone` is what Django's `create_cursor`
    compares with the connection's before it registers a loader of its own on a cursor."""

    timezone = datetime.UTC

    def __init__(self, oid: int, context: Any = None):
        super().__init__(oid, context)
        self.load = _COMPILED(oid, context).load  # type: ignore[method-assign,misc]

    def load(self, data: Any) -> datetime.datetime:  # replaced per instance in __init__
        raise NotImplementedError


@cache
def _adapters(template: adapt.AdaptersMap) -> adapt.AdaptersMap:
    context = adapt.AdaptersMap(template)
    context.register_loader("timestamptz", UtcTimestamptzLoader)
    return context


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if self.timezone is datetime.UTC and "context" in params:
            params["context"] = _adapters(params["context"])
        return params
