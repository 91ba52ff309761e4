"""One worker process of test_budget's shared-budget tests: takes calls from a shared budget.

`python -m tests.connectors.budget_worker '<json args>'` with DJANGO_SETTINGS_MODULE and
DATABASE_URL set; prints {"granted": n, "refused": n} as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import django
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    django.setup()
    # Imported once Django is set up: connectors.budget loads the connectors app's models.
    from connectors.budget import DatabaseBackend, Lane, RateBudget, RedisBackend, TierLimit
    from connectors.dotdigital import errors
    from connectors.dotdigital.client import DotDigitalClient

    args = json.loads(sys.argv[1])
    backend = (
        RedisBackend(args["redis"], prefix=args["prefix"])
        if args.get("redis")
        else DatabaseBackend()
    )
    tiers = {name: TierLimit(args["limit"], args["window"]) for name in args["tiers"]}
    budget = RateBudget(args["key"], tiers, backend=backend)
    client = None
    if args.get("sandbox"):
        client = DotDigitalClient(
            args["user"],
            args["password"],
            endpoint=args["sandbox"],
            discovery_url=args["sandbox"],
            account_key=args["key"],
            budget=budget,
            lane=Lane.REALTIME,
            max_wait=0.0,
        )
    go = Path(args["go"])
    # Ready, then wait for the go: every worker starts calling at once, however long its
    # Django took to start (otherwise the first could take the whole window alone).
    Path(f"{go}.ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    granted = refused = 0
    for n in range(args["attempts"]):
        if client is None:
            if budget.acquire("t", Lane.REALTIME):
                granted += 1
            else:
                refused += 1
            continue
        try:
            client.get_contact("email", f"p{n}@example.com")
            granted += 1
        except errors.RateLimited as exc:
            if exc.status is not None:
                raise
            refused += 1
    print(json.dumps({"granted": granted, "refused": refused}))


# -- used by the tests, in the test process ------------------------------------------------------


def worker_env(tmp_path: Path) -> dict[str, str]:
    """A database both the test and its worker processes see."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1"}
    if connection.vendor == "sqlite":
        # The test database is in memory: give the workers a migrated file of their own.
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'budget.sqlite3'}"
        env["SYNCDESK_VAR_DIR"] = str(tmp_path)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "connectors", "--noinput"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    else:
        settings = connection.settings_dict
        env["DATABASE_URL"] = (
            f"postgres://{settings['USER']}:{settings['PASSWORD'] or ''}@{settings['HOST']}:"
            f"{settings['PORT'] or 5432}/{settings['NAME']}"
        )
    return env


def run_workers(
    tmp_path: Path, env: dict[str, str], count: int, **args: Any
) -> list[dict[str, int]]:
    go = tmp_path / f"go-{uuid.uuid4()}"
    payload = json.dumps({"go": str(go), **args})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.connectors.budget_worker", payload],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob(f"{go.name}.ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


if __name__ == "__main__":
    main()
