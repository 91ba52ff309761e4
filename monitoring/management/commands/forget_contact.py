"""`manage.py forget_contact <email> [--workspace slug] [--dotdigital]`: an erasure request."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Workspace
from monitoring.privacy.erasure import forget_contact


class Command(BaseCommand):
    help = "Erase one person's local data (and, with --dotdigital, their DotDigital contact)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--workspace", help="Only this workspace (slug); default: every one.")
        parser.add_argument(
            "--dotdigital", action="store_true", help="Also delete the contact in DotDigital."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workspaces = Workspace.objects.order_by("slug")
        if options["workspace"]:
            workspaces = workspaces.filter(slug=options["workspace"])
            if not workspaces.exists():
                raise CommandError(f"No workspace {options['workspace']!r}.")
        try:
            for workspace in workspaces:
                report = forget_contact(
                    options["email"], workspace, dotdigital=options["dotdigital"]
                )
                # The email is not echoed: terminal logs are logs too.
                self.stdout.write(f"{workspace.slug}: {report.summary()}")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Audited as contact {report.digest[:16]}.")
