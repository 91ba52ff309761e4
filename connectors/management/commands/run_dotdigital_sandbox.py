"""`manage.py run_dotdigital_sandbox --port 8099 --db var/dotdigital.sqlite3 [--profile ...]`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connectors.dotdigital.sandbox import cli


class Command(BaseCommand):
    # The sandbox needs nothing from Django; skipping the checks keeps its start-up instant.
    requires_system_checks: list[str] = []
    help = "Run the local DotDigital sandbox (the same server as python -m connectors.dotdigital.sandbox)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8099)
        parser.add_argument("--db", required=True)
        parser.add_argument("--profile", default="fast")
        parser.add_argument("--api-user", action="append", default=[], dest="api_user")
        parser.add_argument("--reset", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = [
            "--host",
            options["host"],
            "--port",
            str(options["port"]),
            "--db",
            options["db"],
            "--profile",
            options["profile"],
        ]
        for user in options["api_user"]:
            argv += ["--api-user", user]
        if options["reset"]:
            argv.append("--reset")
        code = cli.main(argv)
        if code:
            raise CommandError(f"the sandbox exited with {code}")
