from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitoring.demo import DEMO_LOGINS, DEMO_PASSWORD, seed_demo


class Command(BaseCommand):
    help = "Create the demo workspace with one login per team and an admin, and print the logins."

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = seed_demo()
        self.stdout.write(f"Demo workspace: {workspace.name} (/w/{workspace.slug}/)")
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for login in DEMO_LOGINS:
            self.stdout.write(
                f"  {login.username:<10} {login.role:<7} team: {', '.join(login.teams)}"
            )
