from __future__ import annotations

from django.apps import AppConfig


class OutboundConfig(AppConfig):
    name = "outbound"
    verbose_name = "Outbound webhooks"

    def ready(self) -> None:
        # Imported here: views import the models, which Django loads after the app configs.
        from outbound import views

        views.register_audit_page()
