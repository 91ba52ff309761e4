"""Reading timestamptz: Django's own loader against the one `config/postgresql` installs, in one run.

    .venv/bin/python bench/timestamps.py [--rows 20000] [--rounds 5] [--postgres URL]

Django (its PostgreSQL backend, psycopg 3) reads every timestamptz with a Python subclass of
psycopg's pure-Python loader; `config/postgresql` hands the value to psycopg's C loader instead.
Each round fetches `--rows` rows of three timestamptz through a connection of each kind, in turn,
and the script prints CPU µs a value (`time.process_time`) for each, and their ratio. It only reads
(`generate_series`), so any database does; the default is the server's `postgres` database. Not
a test: it prints figures and asserts only that both read the same values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUERY = (
    "SELECT t + g * interval '1.5 second', t - g * interval '1 minute', "
    "'2026-03-29 01:30:00+05:30'::timestamptz "
    "FROM generate_series(1, %s) AS g, CAST('2026-12-07 10:00:00.123456+00' AS timestamptz) AS t"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = args.postgres

    import django

    django.setup()
    import psycopg
    from django.db.backends.postgresql.psycopg_any import get_adapters_template

    from config.postgresql.base import _adapters

    django_ctx = get_adapters_template(True, datetime.UTC)
    loaders = {"django": django_ctx, "compiled": _adapters(django_ctx)}
    conns = {}
    for name, ctx in loaders.items():
        conns[name] = psycopg.connect(args.postgres, context=ctx, autocommit=True)
        conns[name].execute("SET TIME ZONE 'UTC'")
    cpu: dict[str, list[float]] = {name: [] for name in loaders}
    read: dict[str, Any] = {}
    for _ in range(args.rounds):
        for name, conn in conns.items():
            cursor = conn.cursor()
            started = time.process_time()
            cursor.execute(QUERY, [args.rows])
            read[name] = cursor.fetchall()
            cpu[name].append(time.process_time() - started)
    assert read["django"] == read["compiled"]
    assert all(v.tzinfo is datetime.UTC for v in read["compiled"][0])
    per_value = {
        name: [round(1e6 * s / (3 * args.rows), 2) for s in seconds]
        for name, seconds in cpu.items()
    }
    mean = {name: sum(v) / len(v) for name, v in per_value.items()}
    print(
        json.dumps(
            {
                "rows": args.rows,
                "values_per_round": 3 * args.rows,
                "cpu_us_per_value_by_round": per_value,
                "ratio_django_to_compiled": round(mean["django"] / mean["compiled"], 1),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
