"""Staging, planning and delivery in process: CPU per event of Syncdesk and of PostgreSQL, for
the batched write path (`monitoring/pipeline/rows.py`: one statement of arrays per batch, bound on
the server in binary) against the paths it replaced, in the same run, on the same mix: per row
(Django's `bulk_create`, an UPDATE per row; `rows.USE_ARRAYS = False`) and arrays bound on the
client as text (`rows.SERVER_BINDING = False`).

    .venv/bin/python bench/pipeline.py [--events 6000] [--postgres postgres://postgres@127.0.0.1:5432/postgres]

It drops and creates its own database, `syncdesk_bench_pipeline`. No HTTP server: events are
posted to the webhook view in process (Django's test client), staged with `run_staging` and
planned with `run_planning`, each timed by `time.process_time` (this process) and
`/proc/<pid>/stat` (the PostgreSQL backend serving it); then delivered by `run_lane` (realtime,
then bulk, in turn until every event has settled) to the DotDigital sandbox (its fast profile,
in a process of its own, not counted), timed by `time.process_time` and the CPU of every
PostgreSQL process on the server (the realtime lane's confirmer polls on a connection of its own:
run it on a quiet server). The bulk lane sends at once here, where the engine waits to fill a
batch. The generator's mix is the engine bench's (bench/engine.py); each phase takes `--events`
fresh events from the same stream, in the order printed. Not a test: it prints figures and
asserts nothing about them.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
DATABASE = "syncdesk_bench_pipeline"
# A phase's write path: (rows.USE_ARRAYS, rows.SERVER_BINDING).
PHASES = {
    "per_row_baseline": (False, False),
    "arrays_bound_on_client": (True, False),
    "arrays": (True, True),
}


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def recreate(url: str, *, create: bool) -> None:
    with _admin(url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (DATABASE,),
        )
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        if create:
            conn.execute(f"CREATE DATABASE {DATABASE}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="events a staging and a planning batch take (default: the engine's own)",
    )
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="the phases to run, in this order"
    )
    parser.add_argument(
        "--profile", metavar="PREFIX", help="write cProfile stats of the measured phase's "
        "staging and planning to PREFIX-run_staging.prof and PREFIX-run_planning.prof",
    )  # fmt: skip
    args = parser.parse_args()
    recreate(args.postgres, create=True)
    os.environ["DATABASE_URL"] = f"{args.postgres.rsplit('/', 1)[0]}/{DATABASE}"
    var = ROOT / "var" / f"bench-pipeline-{os.getpid()}"
    var.mkdir(parents=True, exist_ok=True)
    os.environ["SYNCDESK_VAR_DIR"] = str(var)
    try:
        print(json.dumps(run(args), indent=2))
    finally:
        from django.db import connections

        connections.close_all()
        recreate(args.postgres, create=False)
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts.models import Workspace
    from bench.flows import bench_flows
    from bench.procstat import cpu_seconds_named, stat_seconds
    from bench.stack import free_port, start_sandbox
    from connectors.models import Connection
    from eventgen import Generator
    from monitoring.models import SourceEvent
    from monitoring.pipeline import deliver as deliver_module
    from monitoring.pipeline import rows
    from monitoring.pipeline.lanes import run_lane
    from monitoring.pipeline.plan import run_planning
    from monitoring.pipeline.staging.run import run_staging

    call_command("migrate", verbosity=0)
    port = free_port()
    atexit.register(start_sandbox(port, Path(os.environ["SYNCDESK_VAR_DIR"]), "fast").terminate)
    sandbox = f"http://127.0.0.1:{port}"
    workspace = Workspace.objects.create(name="Bench", slug="bench", currency="GBP")
    dd = Connection.objects.create(
        workspace=workspace, kind="dotdigital", name="DotDigital (sandbox)",
        credentials={"api_user": "apiuser-sandbox@apiconnector.com", "password": "sandbox-password"},
        options={"api_endpoint": sandbox, "discovery_url": sandbox},
    )  # fmt: skip
    urls = bench_flows(workspace, dd)
    client = Client(HTTP_HOST="127.0.0.1")
    gen = Generator(seed=11, customers=args.customers, live=True)

    def post(events: list[dict[str, Any]]) -> None:
        for system, url in urls.items():
            mine = [e for e in events if e["source"]["system"] == system]
            if mine:
                answer = client.post(
                    url, data=json.dumps({"events": mine}), content_type="application/json"
                )
                assert answer.status_code == 202, answer.content[:300]

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def backend_cpu() -> float:
        return stat_seconds(Path(f"/proc/{backend}"))

    def measure(step: Callable[[], int], profile: str = "") -> dict[str, float]:
        server = step is deliver  # the confirmer's connection too
        postgres = partial(cpu_seconds_named, ("postgres",)) if server else backend_cpu
        profiler = cProfile.Profile() if profile else None
        cpu, pg, wall = time.process_time(), postgres(), time.perf_counter()
        done = profiler.runcall(step) if profiler else step()
        cpu, pg = time.process_time() - cpu, postgres() - pg
        if profiler:
            profiler.dump_stats(profile)
        return {
            "events": done,
            "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_ms_per_event": round(1000 * cpu / max(done, 1), 3),
            "postgres_cpu_ms_per_event": round(1000 * pg / max(done, 1), 3),
        }

    catalogue = gen.catalogue_events()
    for i in range(0, len(catalogue), 100):
        post(catalogue[i : i + 100])
    for _ in range(20):  # warm-up: customers and orders to join to
        post(gen.events(100))

    def deliver() -> int:
        """Run both lanes in turn until no event is left ready; the events settled."""
        settled = SourceEvent.objects.exclude(state__in=("received", "ready", "held"))
        before = settled.count()
        deadline = time.monotonic() + 600
        while SourceEvent.objects.filter(state="ready").exists():
            if time.monotonic() > deadline:
                raise SystemExit("delivery did not settle within 600 s")
            for lane in ("realtime", "bulk"):
                run_lane(dd.pk, lane, time_budget=5.0, linger=0.0, idle_sleep=0.02)
        return settled.count() - before

    # The bulk lane sends what is due at once (the engine waits up to a minute to fill a batch).
    deliver_module.BULK_MAX_WAIT = timedelta(0)
    run_staging()
    run_planning()
    deliver()

    sized = {"batch_size": args.batch_size} if args.batch_size else {}
    steps: dict[str, Callable[[], int]] = {
        "staging": partial(run_staging, **sized),
        "planning": partial(run_planning, **sized),
        "delivery": deliver,
    }
    phases: dict[str, Any] = {}
    order = args.phases.split(",")
    repeated = len(set(order)) < len(order)  # then each phase is printed under its place too
    for i, name in enumerate(order, start=1):
        rows.USE_ARRAYS, rows.SERVER_BINDING = PHASES[name]
        for _ in range(args.events // 100):
            post(gen.events(100))
        prefix = args.profile if name == "arrays" and args.profile else ""
        phases[f"{i}. {name}" if repeated else name] = {
            name: measure(step, prefix and f"{prefix}-run_{name}.prof")
            for name, step in steps.items()
        }
    rows.USE_ARRAYS, rows.SERVER_BINDING = True, True

    def total(phase: dict[str, Any], key: str) -> float:
        return float(phase["staging"][key] + phase["planning"][key])

    def end_to_end(phase: dict[str, Any], key: str) -> float:
        return total(phase, key) + float(phase["delivery"][key])

    measured = [k for k in phases if k.endswith("arrays")] or list(phases)
    new = phases[measured[-1]]  # the ratios are to the last phase of the current path
    return {
        "assumptions": {
            "events_per_phase": args.events,
            "customers": args.customers,
            "batch_size": args.batch_size,
            "cores": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        **phases,
        "staging_and_planning_cpu_ms_per_event": {
            name: round(total(phase, "cpu_ms_per_event"), 3) for name, phase in phases.items()
        },
        "ratio_to_arrays": {
            name: round(
                total(phase, "cpu_ms_per_event") / max(total(new, "cpu_ms_per_event"), 1e-9), 2
            )
            for name, phase in phases.items()
            if phase is not new
        },
        "postgres_cpu_ms_per_event": {
            name: round(total(phase, "postgres_cpu_ms_per_event"), 3)
            for name, phase in phases.items()
        },
        "staging_planning_and_delivery_cpu_ms_per_event": {
            name: {
                "ours": round(end_to_end(phase, "cpu_ms_per_event"), 3),
                "postgres": round(end_to_end(phase, "postgres_cpu_ms_per_event"), 3),
            }
            for name, phase in phases.items()
        },
    }


if __name__ == "__main__":
    sys.exit(main())
