"""Run delivery for one DotDigital connection in the foreground: plan, send and confirm its lanes
until nothing is due (or the time is up). Workers use the Celery tasks; this is for operators, the
kill-point tests (`SYNCDESK_KILL_AT`) and the benchmark."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand

from monitoring.pipeline.lanes import run_lane


class Command(BaseCommand):
    help = "Plan, send and confirm a DotDigital connection's outbox until it is idle."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--destination", type=int, required=True)
        parser.add_argument("--lane", choices=["realtime", "bulk", "both"], default="both")
        parser.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
        parser.add_argument("--linger", type=float, default=0.0, help="keep looking when idle")

    def handle(self, *args: Any, **options: Any) -> None:
        lanes = ["realtime", "bulk"] if options["lane"] == "both" else [options["lane"]]
        deadline = time.monotonic() + options["seconds"]
        totals = {"planned": 0, "sent": 0, "confirmed": 0}
        while time.monotonic() < deadline:
            did = 0
            for lane in lanes:
                counts = run_lane(
                    options["destination"],
                    lane,
                    time_budget=max(0.1, min(5.0, deadline - time.monotonic())),
                    linger=options["linger"],
                )
                for key, value in counts.items():
                    totals[key] += value
                    did += value
            if not did:
                break
        self.stdout.write(json.dumps(totals))
