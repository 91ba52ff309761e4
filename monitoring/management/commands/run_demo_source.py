"""The demo's sources: the event generator posting a demo ERP's and a demo WMS's events to their
webhooks (tokens from var/demo-tokens.json, written by seed_demo) at a few per second, with the
demo faults (guest duplicates, missing emails, odd SKUs, duplicates, reordering, bad totals), after
setting a small rate of 5xx answers and 429s on the DotDigital sandbox.

`--serve <system>` serves a recorded source system's API instead, and `--replay` posts each
recorded system's webhook requests (and polls the polled ones) through their native paths: see
"Recorded source systems" in monitoring/demo.py."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import requests
from django.core.management.base import BaseCommand

from connectors.sources.replay import replay_anchor
from eventgen import Faults, Generator
from eventgen.post import post_batches
from monitoring.demo import (
    POLL_SECONDS,
    DemoSystem,
    api_ports,
    demo_system,
    demo_systems,
    poll_demo_flows,
    replay_requests,
    serve_api,
    tokens_path,
)

log = logging.getLogger(__name__)

# While the recordings play, the polled systems are polled this often: a record is served once
# its moment has come (`replay.revealed`), and reaches Syncdesk within a second of it.
PLAY_POLL_SECONDS = 1.0

SANDBOX_FAULTS = {"seed": 7, "error_rate": 0.02, "error_status": 503, "rate_limit_rate": 0.005}


class Command(BaseCommand):
    help = "Post generated ERP and WMS events to the demo flows' webhooks until stopped."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--sandbox", default="http://127.0.0.1:8099")
        parser.add_argument("--rate", type=float, default=4.0, help="events per second")
        parser.add_argument("--batch", type=int, default=8)
        parser.add_argument("--events", type=int, default=0, help="0 = until stopped")
        parser.add_argument("--serve", metavar="SYSTEM", help="serve this system's recorded API")
        parser.add_argument(
            "--replay", action="store_true", help="replay the recorded systems, then keep polling"
        )
        parser.add_argument(
            "--once", action="store_true", help="with --replay: stop after one replay"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s demo-source: %(message)s")
        if options["serve"]:
            served = demo_system(options["serve"])
            server = serve_api(served, api_ports()[served.key])
            log.info("%s's recorded API on port %s", served.key, server.server_address[1])
            with contextlib.suppress(KeyboardInterrupt):  # run_demo's Ctrl-C
                server.serve_forever()
            return
        if options["replay"]:
            with contextlib.suppress(KeyboardInterrupt):
                self._replay(options["url"], once=options["once"])
            return
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
                # The event happens as it is posted, to the millisecond: the generator's clock
                # has whole seconds, which would add half a second to every latency shown.
                now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                for event in batch:
                    event["occurred_at"] = now
                for system, url in urls.items():
                    mine = [e for e in batch if e["source"]["system"] == system]
                    if mine:
                        post_batches(url, [mine], session=session)
                pause = len(batch) / rate - (time.monotonic() - started)
                if pause > 0:
                    time.sleep(pause)

    def _replay(self, url: str, *, once: bool) -> None:
        tokens = json.loads(tokens_path().read_text())
        systems = demo_systems()
        with requests.Session() as session:
            self._wait_for(session, f"{url}/healthz")
            refused = self._play(systems, tokens, url, session, replay_anchor())
        for system in systems:  # everything the recorded APIs hold has come by now
            if system.polls:
                self._poll(system)
        # scripts/demo_check.py waits for this line.
        log.info(
            "recorded systems replayed: %s",
            f"{len(refused)} refused: {'; '.join(refused)}" if refused else "all accepted",
        )
        if once:
            return
        while True:
            time.sleep(POLL_SECONDS)
            for system in systems:
                if system.polls:
                    self._poll(system)

    def _play(
        self,
        systems: list[DemoSystem],
        tokens: dict[str, str],
        url: str,
        session: requests.Session,
        anchor: datetime,
    ) -> list[str]:
        """Until the replay's present: each recorded request posted when its moment comes, and
        each polled system polled every PLAY_POLL_SECONDS meanwhile (a system that polls after
        its requests, once they are all sent), so its records arrive as they come due. Returns
        the requests refused."""
        timeline = sorted(
            (min(recorded.at or anchor, anchor), order, index, system, recorded)
            for order, system in enumerate(systems)
            for index, recorded in enumerate(system.requests())
        )
        waiting = {system.key: 0 for system in systems}
        for _, _, _, system, _ in timeline:
            waiting[system.key] += 1
        refused: list[str] = []
        polled_at: dict[str, float] = {}
        while timeline or datetime.now(UTC) < anchor:
            while timeline and timeline[0][0] <= datetime.now(UTC):
                _, _, _, system, recorded = timeline.pop(0)
                [(label, status)] = replay_requests(
                    system, url, tokens[system.key], session, [recorded]
                )
                log.info("%s: %s → %s", system.key, label, status)
                waiting[system.key] -= 1
                if status != 202:
                    refused.append(f"{system.key}: {label} ({status})")
            for system in systems:
                due = time.monotonic() - polled_at.get(system.key, 0.0) >= PLAY_POLL_SECONDS
                if system.polls and due and (system.poll_first or not waiting[system.key]):
                    polled_at[system.key] = time.monotonic()
                    with contextlib.suppress(Exception):  # the recorded API may be starting
                        poll_demo_flows(system)
            time.sleep(0.2)
        return refused

    def _poll(self, system: DemoSystem) -> None:
        for _ in range(30):
            try:
                log.info("%s: polled, %s events accepted", system.key, poll_demo_flows(system))
                return
            except Exception as exc:  # the recorded API may still be starting
                log.info("%s: poll failed (%s); again in 1 s", system.key, exc)
                time.sleep(1)

    def _wait_for(self, session: requests.Session, url: str) -> None:
        for _ in range(120):
            try:
                if session.get(url, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        log.warning("%s did not answer; replaying anyway", url)

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
