"""Writing many rows at once, for staging, planning and confirmation: what `bulk_update` and
`bulk_create` write, at a fraction of their cost.

On PostgreSQL a batch is one statement whatever its size: the values travel as a typed array per
column (`unnest`), JSON columns as one JSON array (`jsonb_array_elements`, zipped with the rest
by `ROWS FROM`), since an array of JSON documents is escaped element by element and cost more
than the rest of planning. The arrays are bound on the server in PostgreSQL's binary format
(`_cursor`): Django's cursors bind on the client, writing every element of every array into the
statement's text as an escaped literal (an eighth of staging in a profile). Elsewhere (SQLite) an
UPDATE per row through executemany, and Django's `bulk_create`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, models

# Fields whose Python values psycopg adapts as Django's get_db_prep_save would (TextChoices
# members aside, which go as their values).
_PLAIN_TYPES = (
    models.CharField,
    models.TextField,
    models.IntegerField,  # and its big, small and positive kinds
    models.BooleanField,
    models.DateTimeField,
    models.DecimalField,
    models.ForeignKey,
)
PLAIN, JSON, PREPARED = "plain", "json", "prepared"
CHUNK = 2000
# False: PostgreSQL takes Django's per-row insert path too (a baseline to measure against).
USE_ARRAYS = True
# False: arrays are bound on the client as text, and staging inserts through `bulk_create` (the
# path before binary arrays, a baseline for bench/pipeline.py).
SERVER_BINDING = True


def arrays() -> bool:
    """Whether batches go as one statement of arrays (PostgreSQL)."""
    return USE_ARRAYS and connection.vendor == "postgresql"


def _kind(f: Any) -> str:
    if isinstance(f, models.JSONField) and not f.null:
        return JSON  # a SQL NULL cannot ride in a JSON array: nullable JSON goes prepared
    if isinstance(f, _PLAIN_TYPES):
        return PLAIN
    return PREPARED


def _value(f: Any, value: Any, kind: str) -> Any:
    if kind == PREPARED:
        return f.get_db_prep_save(value, connection)
    if isinstance(value, enum.Enum):  # a TextChoices member: its value, as Django saves it
        return value.value
    return value


@contextmanager
def _cursor() -> Iterator[Any]:
    """A Django cursor (its execute wrappers and query log included) over a psycopg cursor that
    binds parameters on the server, so `%b` sends an array in binary, five to eight times cheaper
    to build than the escaped text literal of 2,000 strings or timestamps. Never prepared, like
    Django's own statements, so a pooler in transaction mode still serves the connection."""
    import psycopg

    if not SERVER_BINDING:
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    connection.connection.prepare_threshold = None
    raw: Any = psycopg.Cursor(connection.connection)
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with wrap(raw) as cursor:
        yield cursor


_DB_TYPES: dict[Any, str] = {}


def _db_type(f: Any) -> str:
    """The column's type, worked out once per field (Django formats it anew on every call, and
    a one-row insert names some thirty columns)."""
    found = _DB_TYPES.get(f)
    if found is None:
        found = _DB_TYPES[f] = f.db_type(connection)
    return found


def _rows_from(
    fields: list[Any], kinds: list[str], columns: list[list[Any]]
) -> tuple[str, list[Any]]:
    """`ROWS FROM (…)` yielding the columns side by side, and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    bind = "%b" if SERVER_BINDING else "%s"
    for f, kind, values in zip(fields, kinds, columns, strict=True):
        if kind == JSON:
            parts.append(f"jsonb_array_elements({bind}::jsonb)")
            params.append(json.dumps(values, cls=f.encoder))
        else:
            parts.append(f"unnest({bind}::{_db_type(f)}[])")
            params.append(values)
    return f"ROWS FROM ({', '.join(parts)})", params


def bulk_set(objs: list[Any], fields: Iterable[str]) -> None:
    """Write `fields` of each of `objs` (rows of one model), as `bulk_update` would."""
    if not objs:
        return
    meta = objs[0]._meta
    columns = [meta.get_field(name) for name in fields]
    wanted = frozenset(columns)
    assert len(set(columns)) == len(columns)
    quote = connection.ops.quote_name
    pk = meta.pk
    if not arrays():
        sql = "UPDATE {} SET {} WHERE {} = %s".format(
            quote(meta.db_table),
            ", ".join(f"{quote(f.column)} = %s" for f in columns),
            quote(pk.column),
        )
        rows = []
        for obj in objs:
            obj._prepare_related_fields_for_save(operation_name="bulk_update", fields=wanted)
            rows.append(
                [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in columns]
                + [pk.get_db_prep_save(obj.pk, connection)]
            )
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        return
    fields_all = [pk, *columns]
    kinds = [PLAIN] + [_kind(f) for f in columns]
    values: list[list[Any]] = [[] for _ in fields_all]
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_update", fields=wanted)
        values[0].append(obj.pk)
        for i, f in enumerate(columns, start=1):
            values[i].append(_value(f, getattr(obj, f.attname), kinds[i]))
    aliases = ", ".join(f"_c{i}" for i in range(len(fields_all)))
    sets = ", ".join(f"{quote(f.column)} = v._c{i}" for i, f in enumerate(columns, start=1))
    with _cursor() as cursor:
        for start in range(0, len(objs), CHUNK):
            source, params = _rows_from(
                fields_all, kinds, [v[start : start + CHUNK] for v in values]
            )
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} AS t SET {sets} FROM {source} AS v({aliases}) "
                f"WHERE t.{quote(pk.column)} = v._c0",
                params,
            )


def create_rows(objs: list[Any], *, ignore_conflicts: bool = False) -> None:
    """`bulk_create(objs)` (new rows of one model): each instance's id is the one it holds or,
    where none hold one, the sequence's, set on it (unless conflicts are ignored)."""
    if not objs:
        return
    if not arrays() or not SERVER_BINDING:
        type(objs[0])._default_manager.bulk_create(
            objs, ignore_conflicts=ignore_conflicts, batch_size=500
        )
        return
    given = objs[0].pk is not None
    assert all((obj.pk is not None) == given for obj in objs)
    pk = objs[0]._meta.pk
    want_ids = not given and not ignore_conflicts
    inserted = insert_rows(
        objs,
        ignore_conflicts=ignore_conflicts,
        returning=(pk.column,) if want_ids else (),
        with_pk=given,
    )
    if want_ids:
        for obj, (value,) in zip(objs, inserted, strict=True):
            obj.pk = value
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias


def insert_rows(
    objs: list[Any],
    *,
    ignore_conflicts: bool = False,
    returning: tuple[str, ...] = (),
    with_pk: bool = False,
) -> list[tuple[Any, ...]]:
    """PostgreSQL: INSERT `objs` (new rows of one model) as `bulk_create` would (every concrete
    field as the instance holds it, auto_now fields set, ids from the sequence unless `with_pk`),
    `ON CONFLICT DO NOTHING` if asked. Returns the `returning` columns of the rows inserted (not
    of those a conflict skipped), in the order of `objs`."""
    if not objs:
        return []
    assert arrays()
    meta = objs[0]._meta
    columns = [f for f in meta.concrete_fields if with_pk or not f.primary_key]
    kinds = [_kind(f) for f in columns]
    values: list[list[Any]] = [[] for _ in columns]
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
        for i, f in enumerate(columns):
            values[i].append(_value(f, f.pre_save(obj, True), kinds[i]))
    return _insert(meta, columns, kinds, values, ignore_conflicts, returning)


def insert_values(
    model: Any,
    names: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """PostgreSQL: `insert_rows` for rows given as tuples of the fields `names` (attnames, such
    as `event_id`), without building a model instance for each only to read it back (a
    twentieth of planning's CPU in a profile, for the links). Fields not named take their
    defaults."""
    if not rows:
        return
    assert arrays()
    meta = model._meta
    columns = [f for f in meta.concrete_fields if not f.primary_key]
    at_of = {f.attname: f for f in columns}
    named = {at_of[name]: i for i, name in enumerate(names)}
    kinds = [_kind(f) for f in columns]
    values: list[list[Any]] = []
    for f, kind in zip(columns, kinds, strict=True):
        at = named.get(f)
        if at is None:
            values.append([_value(f, f.get_default(), kind)] * len(rows))
        else:
            values.append([_value(f, row[at], kind) for row in rows])
    _insert(meta, columns, kinds, values, ignore_conflicts, ())


def _insert(
    meta: Any,
    columns: list[Any],
    kinds: list[str],
    values: list[list[Any]],
    ignore_conflicts: bool,
    returning: tuple[str, ...],
) -> list[tuple[Any, ...]]:
    """One INSERT … SELECT FROM ROWS FROM (…) per `CHUNK` rows of `values` (a list per column)."""
    quote = connection.ops.quote_name
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    ret = f" RETURNING {', '.join(quote(c) for c in returning)}" if returning else ""
    cols = ", ".join(quote(f.column) for f in columns)
    out: list[tuple[Any, ...]] = []
    with _cursor() as cursor:
        for start in range(0, len(values[0]), CHUNK):
            source, params = _rows_from(columns, kinds, [v[start : start + CHUNK] for v in values])
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({cols}) SELECT * FROM {source}{conflict}{ret}",
                params,
            )
            if returning:
                out.extend(cursor.fetchall())
    return out
