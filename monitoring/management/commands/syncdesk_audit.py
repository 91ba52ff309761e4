"""`manage.py syncdesk_audit [--settle N]`: prove that no accepted event is lost."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Workspace
from monitoring.pipeline.audit import CATEGORIES, AuditReport, audit


class Command(BaseCommand):
    help = (
        "Count every event as delivered, held, skipped, failed (with an open occurrence), ready to "
        "deliver or in progress; exit non-zero if any is none of these, or still in progress after "
        "--settle seconds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--settle", type=float, default=0, help="Wait up to N s for work.")
        parser.add_argument("--workspace", help="Only this workspace (slug).")
        parser.add_argument(
            "--expect-delivery",
            action="store_true",
            help="Count 'ready to deliver' as in progress (when the delivery workers run).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workspace_id = None
        if options["workspace"]:
            ws = Workspace.objects.filter(slug=options["workspace"]).first()
            if ws is None:
                raise CommandError(f"No workspace {options['workspace']!r}.")
            workspace_id = ws.pk
        ready_busy = options["expect_delivery"]
        deadline = time.monotonic() + options["settle"]
        report = audit(workspace_id)
        while report.in_progress(ready_in_progress=ready_busy) and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            report = audit(workspace_id)
        self._print(report)
        problems = []
        if report.outside:
            problems.append(f"{len(report.outside)} event(s) fall outside every category")
        busy = report.in_progress(ready_in_progress=ready_busy)
        if busy and options["settle"]:
            problems.append(f"{busy} event(s) still in progress after settling")
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write(self.style.SUCCESS(f"All {report.total} events accounted for."))

    def _print(self, report: AuditReport) -> None:
        write = self.stdout.write
        write(f"{'events':<20}{report.total:>10}")
        for category in CATEGORIES:
            write(f"{category:<20}{report.counts[category]:>10}")
        for title, breakdown in (
            ("held", report.held_reasons),
            ("skipped", report.skipped_reasons),
            ("failed", report.failed_kinds),
        ):
            for label, count in sorted(breakdown.items(), key=lambda item: -item[1]):
                write(f"  {title}: {label:<60}{count:>8}")
        for pk, why in report.outside[:20]:
            write(self.style.ERROR(f"  event {pk}: {why}"))
