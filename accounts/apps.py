from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Workspaces and teams"

    def ready(self) -> None:
        # Importing registers the deploy checks; Django's place for that is ready(), after loading.
        from accounts import checks  # noqa: F401
