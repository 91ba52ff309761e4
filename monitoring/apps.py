from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Sync engine and monitoring"

    def ready(self) -> None:
        from monitoring.pipeline import hooks

        hooks.register()

        from monitoring.pipeline import confirm

        confirm.register_hooks()

        from monitoring.watch import alerts, reconcile

        alerts.register_hooks()
        reconcile.register_hooks()

        from monitoring.configuration import services as config_services

        config_services.register_audit_pages()  # links of the audit page (issue 9)
