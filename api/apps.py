from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        # Imported here, not at the top: the views import models, loaded after the app configs.
        from api import views

        views.register_audit_page()  # the audit page links a key's rows to the keys page
