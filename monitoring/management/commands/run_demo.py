"""Run the whole product in the foreground: web, a worker per queue and beat. Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from connectors.sources.replay import ANCHOR_ENV, REPLAY_LEAD
from connectors.sources.values import rfc3339
from monitoring.demo import api_ports
from monitoring.models import WorkerHeartbeat
from monitoring.tasks import record_heartbeat


def _manage(command: str) -> list[str]:
    return [sys.executable, os.path.join(settings.BASE_DIR, "manage.py"), command]


QUEUES = ("realtime", "bulk", "webhooks")
# How long the sources wait for the workers before starting anyway (a slow first start).
READY_TIMEOUT = 90.0

# The realtime worker stages each flow's realtime events and runs the lane, whose runner holds a
# slot while it works: with two slots, seven flows' staging shared one.
CONCURRENCY = {"realtime": "3"}


def _worker_options(queue: str) -> list[str]:
    """A Celery worker of one queue, named after it."""
    return [
        "worker",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--concurrency",
        CONCURRENCY.get(queue, "2"),
        "--loglevel",
        "INFO",
    ]


class Command(BaseCommand):
    help = "Run web (gunicorn), a Celery worker per queue (realtime, bulk, webhooks) and beat, until Ctrl-C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
        parser.add_argument(
            "--sandbox-port", type=int, default=int(os.environ.get("DEMO_SANDBOX_PORT", "8099"))
        )

    def processes(self, port: int, sandbox_port: int) -> dict[str, list[str]]:
        """Every process by name; the sources' names start with `demo-` (started once the
        workers are up)."""
        bindir = os.path.dirname(sys.executable)
        celery = [os.path.join(bindir, "celery"), "-A", "config"]
        return {
            # The local DotDigital the demo workspace's connection points at (its own SQLite file).
            "dotdigital-sandbox": [
                sys.executable,
                "-m",
                "connectors.dotdigital.sandbox",
                "--port",
                str(sandbox_port),
                "--db",
                str(settings.VAR_DIR / "dotdigital-sandbox.sqlite3"),
                "--profile",
                "realistic",
            ],
            "web": [
                os.path.join(bindir, "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
            "worker-realtime": [*celery, *_worker_options("realtime")],
            # Throughput work at a lower CPU priority, as production should run it: a backlog
            # never takes the CPU from a dispatch (docs/architecture.md).
            "worker-bulk": ["nice", "-n", "10", *celery, *_worker_options("bulk")],
            "worker-webhooks": [*celery, *_worker_options("webhooks")],
            # The demo's WMS and ERP: generated events through the public webhooks.
            "demo-source": [
                *_manage("run_demo_source"),
                "--url",
                f"http://127.0.0.1:{port}",
                "--sandbox",
                f"http://127.0.0.1:{sandbox_port}",
            ],
            # The recorded source systems (monitoring/demo.py): their APIs, and their requests
            # replayed through the public webhooks (and polled) once the web answers.
            **{
                f"demo-{key}-api": [*_manage("run_demo_source"), "--serve", key]
                for key in api_ports()
            },
            "demo-replay": [
                *_manage("run_demo_source"),
                "--replay",
                "--url",
                f"http://127.0.0.1:{port}",
            ],
            "beat": [
                *celery,
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        }

    def wait_for_workers(
        self, children: dict[str, subprocess.Popen[bytes]], stopped: Callable[[], bool]
    ) -> None:
        """Until a worker of each queue has taken a heartbeat sent now (or READY_TIMEOUT).

        The sources start after: an event posted while the workers still import Django would
        wait for them, and the demo's first minute would show start-up as latency."""
        since = timezone.now()
        for queue in QUEUES:
            record_heartbeat.apply_async(args=(queue,), queue=queue, expires=READY_TIMEOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if stopped() or any(proc.poll() is not None for proc in children.values()):
                return  # the loop in handle reports it and stops
            ready = WorkerHeartbeat.objects.filter(queue__in=QUEUES, seen_at__gte=since).count()
            if ready == len(QUEUES):
                self.stdout.write(
                    f"workers ready in {(timezone.now() - since).total_seconds():.1f} s"
                )
                return
            time.sleep(0.25)
        self.stderr.write(f"the workers did not answer in {READY_TIMEOUT:.0f} s; starting anyway")

    def handle(self, *args: Any, **options: Any) -> None:
        broker = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "control_folder"):
            if key in broker:
                os.makedirs(str(broker[key]), exist_ok=True)
        children: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        processes = self.processes(options["port"], options["sandbox_port"])
        sources = {name: argv for name, argv in processes.items() if name.startswith("demo-")}
        for name, argv in processes.items():
            if name not in sources:
                children[name] = subprocess.Popen(argv)
                self.stdout.write(f"started {name} (pid {children[name].pid})")
        self.wait_for_workers(children, lambda: stopping)
        # One present for the recorded systems' APIs and their replay (separate processes), so
        # a recording's webhooks and records keep their order when moved to it; REPLAY_LEAD
        # ahead, so the recordings play from now to then, each event as it happens.
        present = timezone.now().replace(microsecond=0) + REPLAY_LEAD
        os.environ[ANCHOR_ENV] = rfc3339(present)
        for name, argv in sources.items() if not stopping else ():
            children[name] = subprocess.Popen(argv)
            self.stdout.write(f"started {name} (pid {children[name].pid})")
        self.stdout.write(f"Syncdesk is at http://127.0.0.1:{options['port']}/  (Ctrl-C stops all)")
        self.stdout.write(
            f"The DotDigital sandbox's state: http://127.0.0.1:{options['sandbox_port']}/_sandbox/"
        )
        exit_code = 0
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with {proc.returncode}; stopping the demo")
                    stopping, exit_code = True, 1
                    break
            time.sleep(0.5)
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(exit_code)
