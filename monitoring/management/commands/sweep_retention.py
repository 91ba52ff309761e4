"""`manage.py sweep_retention [--days N] [--batch-size N]`: redact payloads past retention now
(beat runs the same sweep every hour as the task `monitoring.sweep_retention`)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitoring.privacy.retention import DEFAULT_BATCH, retention_days, sweep_retention


class Command(BaseCommand):
    help = "Redact webhook bodies, event envelopes and notification payloads past retention."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else retention_days()
        report = sweep_retention(days=days, batch_size=options["batch_size"])
        self.stdout.write(
            f"Redacted {report.requests} request bodies, {report.events} event envelopes and "
            f"{report.notifications} notification payloads older than {days} days "
            f"(in {report.batches} batches)."
        )
