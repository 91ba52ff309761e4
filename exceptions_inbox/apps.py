from __future__ import annotations

from django.apps import AppConfig


class ExceptionsInboxConfig(AppConfig):
    name = "exceptions_inbox"
    verbose_name = "Exceptions inbox"
