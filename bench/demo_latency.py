"""The embedded default's realtime latency: `make demo`'s processes (SQLite, Celery's filesystem
broker, the sandbox's realistic profile, the demo source and the recorded flows) for `--minutes`,
then the demo flows' realtime events delivered in the last 3 minutes, from the database.

    .venv/bin/python bench/demo_latency.py [--minutes 5] [--port 8790] [--sandbox-port 8791]

It runs in a fresh folder of its own (`SYNCDESK_VAR_DIR`, removed afterwards unless `--keep`), so
it neither needs nor touches `var/`. Prints p50/p95/max from the event to delivered (what the Flows
page shows), with the stage split: source (occurred → received), staging (received → staged),
planning to send (staged → sent) and DotDigital (sent → delivered). Target: p95 <= 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
from bench.stack import latency_report  # noqa: E402

WINDOW = timedelta(minutes=3)
TARGET_P95 = 2.0


def run_demo(var: Path, args: argparse.Namespace) -> None:
    env = {
        **os.environ,
        "SYNCDESK_VAR_DIR": str(var),
        "DEMO_PORT": str(args.port),
        "DEMO_SANDBOX_PORT": str(args.sandbox_port),
        "DEMO_SOURCES_PORT": str(args.sandbox_port + 1),
    }
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "RATE_BUDGET_REDIS_URL"):
        env.pop(name, None)  # the embedded default, whatever this shell points at
    manage = [PY, str(ROOT / "manage.py")]
    for step in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run([*manage, *step], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    log = open(var / "demo.log", "wb")  # noqa: SIM115 (closed below, once the demo stops)
    demo = subprocess.Popen(
        [*manage, "run_demo"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            if demo.poll() is not None:
                raise SystemExit(f"the demo exited early ({demo.returncode}); see {var}/demo.log")
            time.sleep(2)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                demo.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
        log.close()


def report(var: Path) -> dict[str, float]:
    os.environ["SYNCDESK_VAR_DIR"] = str(var)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "RATE_BUDGET_REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db.models import Count, Max

    from monitoring.models import SourceEvent

    last = SourceEvent.objects.aggregate(last=Max("delivered_at"))["last"]
    if last is None:
        print("no event was delivered")
        return {}
    rows = list(
        SourceEvent.objects.filter(
            lane="realtime",
            state="delivered",
            is_backfill=False,
            delivered_at__gt=last - WINDOW,
        ).values_list("occurred_at", "received_at", "staged_at", "sent_at", "delivered_at")
    )
    report = latency_report(rows)
    print(f"realtime events delivered in the last 3 minutes: {report['events']}")
    print(f"  event -> delivered   p50 {report['p50_s']:7.2f} s  p95 {report['p95_s']:7.2f} s"
          f"  max {report['max_s']:7.2f} s")  # fmt: skip
    for name in report["p50_split_s"]:
        p50, p95 = report["p50_split_s"][name], report["p95_split_s"][name]
        print(f"  {name:<19} p50 {p50:7.2f} s  p95 {p95:7.2f} s")
    flows_page(last)
    by_state = dict(SourceEvent.objects.values_list("state").annotate(n=Count("pk")))
    print(f"  every event by state: {by_state}")
    met = report["p95_s"] <= TARGET_P95
    print(f"target realtime p95 <= {TARGET_P95} s: {'met' if met else 'NOT met'}")
    return {"p50": report["p50_s"], "p95": report["p95_s"]}


def flows_page(now: Any) -> None:
    """What the Flows page shows at the end: each flow's state and its lanes' p50/p95 over the
    hour (the whole run), start-up included."""
    from monitoring.models import Flow
    from monitoring.watch.flow_health import flow_health, fmt_seconds

    print("the Flows page at the end (the hour: the whole run, start-up included):")
    for h in flow_health(Flow.objects.filter(workspace__slug="demo").order_by("name"), now=now):
        lanes = "  ".join(
            f"{lane.lane} {fmt_seconds(lane.p50)} / {fmt_seconds(lane.p95)} ({lane.delivered})"
            for lane in h.lanes_hour
        )
        print(f"  {h.flow.name:<38} {h.state:<8} {lanes}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--sandbox-port", type=int, default=8791)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="syncdesk-demo-latency-"))
    try:
        started = time.monotonic()
        run_demo(var, args)
        print(f"demo ran {time.monotonic() - started:.0f} s in {var}")
        report(var)
    finally:
        if args.keep:
            print(f"kept {var}")
        else:
            shutil.rmtree(var, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
