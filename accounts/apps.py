from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Workspaces and teams"

    def ready(self) -> None:
        from accounts import checks  # noqa: F401 (registers the deploy checks)
