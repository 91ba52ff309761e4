from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Sync engine and monitoring"

    def ready(self) -> None:
        # Imported here, not at the top: these modules import models, which Django loads after
        # the app configs.
        from monitoring.configuration import services as config_services
        from monitoring.pipeline import confirm, hooks, programs
        from monitoring.watch import alerts, reconcile

        hooks.register()
        confirm.register_hooks()
        programs.register_hooks()
        alerts.register_hooks()
        reconcile.register_hooks()
        config_services.register_audit_pages()  # links of the audit page
