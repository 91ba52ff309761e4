"""The PostgreSQL backend (`config/postgresql`) reads timestamptz with psycopg's compiled loader and
gives back what Django's own would: the same instant, aware, in UTC."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from psycopg import adapters
from psycopg.pq import Format

from config.postgresql.base import UtcTimestamptzLoader

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loader is psycopg's"),
]
OID = adapters.types["timestamptz"].oid


def test_connections_read_timestamptz_with_the_compiled_loader():
    connection.ensure_connection()
    with connection.cursor() as cursor:
        loader = cursor.cursor.adapters.get_loader(OID, Format.TEXT)
        cursor.execute("SELECT now()")
        cursor.fetchone()
    assert loader is UtcTimestamptzLoader
    compiled = adapters.get_loader(OID, Format.TEXT)
    assert type(loader(OID, connection.connection).load) is type(compiled(OID, None).load)


def test_timestamps_read_back_as_the_same_instant_aware_in_utc():
    india = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    joined = datetime.datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=india)
    user = get_user_model().objects.create(username="loader", date_joined=joined)

    read = get_user_model().objects.values_list("date_joined", "last_login").get(pk=user.pk)

    assert read == (joined, None)
    assert read[0].tzinfo is datetime.UTC
    assert read[0].isoformat() == "2026-03-28T20:00:15.123456+00:00"


def test_raw_queries_get_utc_whatever_offset_postgresql_is_given():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT '2026-12-07 10:00:00-08'::timestamptz, '0001-01-01 00:00:00+00'::timestamptz, "
            "'9999-12-31 23:59:59.999999+00'::timestamptz"
        )
        values = cursor.fetchone()
    assert values == (
        datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC),
        datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC),
    )
    assert all(value.tzinfo is datetime.UTC for value in values)
