"""The demo's sources: the event generator posting a demo ERP's and a demo WMS's events to their
webhooks (tokens from var/demo-tokens.json, written by seed_demo) at a few per second, with the
demo faults (guest duplicates, missing emails, odd SKUs, duplicates, reordering, bad totals), after
setting a small rate of 5xx answers and 429s on the DotDigital sandbox."""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import requests
from django.core.management.base import BaseCommand

from eventgen import Faults, Generator
from eventgen.post import post_batches
from monitoring.demo import tokens_path

log = logging.getLogger(__name__)

SANDBOX_FAULTS = {"seed": 7, "error_rate": 0.02, "error_status": 503, "rate_limit_rate": 0.005}


class Command(BaseCommand):
    help = "Post generated ERP and WMS events to the demo flows' webhooks until stopped."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--sandbox", default="http://127.0.0.1:8099")
        parser.add_argument("--rate", type=float, default=4.0, help="events per second")
        parser.add_argument("--batch", type=int, default=8)
        parser.add_argument("--events", type=int, default=0, help="0 = until stopped")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s demo-source: %(message)s")
        tokens = json.loads(tokens_path().read_text())
        self._sandbox_faults(options["sandbox"])
        # The people and the catalogue are seed 1's (what seed_demo loaded); the stream after
        # them is new on every run, with order numbers that never repeat an earlier run's.
        gen = Generator(seed=1, live=True, faults=Faults.demo())
        gen.catalogue_events()
        gen.rng = random.Random(time.time_ns())
        gen._seq = int(time.time()) * 10  # noqa: SLF001
        urls = {
            "demo-erp": f"{options['url']}/hooks/{tokens['erp']}/",
            "demo-wms": f"{options['url']}/hooks/{tokens['wms']}/",
        }
        rate = options["rate"]
        batches = self._batches(gen, options["batch"], options["events"])
        with requests.Session() as session:
            for batch in batches:
                started = time.monotonic()
                for system, url in urls.items():
                    mine = [e for e in batch if e["source"]["system"] == system]
                    if mine:
                        post_batches(url, [mine], session=session)
                pause = len(batch) / rate - (time.monotonic() - started)
                if pause > 0:
                    time.sleep(pause)

    def _batches(self, gen: Generator, size: int, total: int) -> Iterator[list[dict[str, Any]]]:
        counts = itertools.count() if total == 0 else range(0, total, size)
        for _ in counts:
            yield gen.events(size)

    def _sandbox_faults(self, base: str) -> None:
        for _ in range(60):
            try:
                requests.post(f"{base}/_sandbox/faults", json=SANDBOX_FAULTS, timeout=5)
                return
            except requests.RequestException:
                time.sleep(1)
        log.warning("the DotDigital sandbox did not answer; no faults set")
