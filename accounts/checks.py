from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_generated_secrets(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """In production every machine must share SECRET_KEY and FIELD_ENCRYPTION_KEYS: set them."""
    return [
        Warning(
            f"{name} is not set in the environment; a key was generated into {settings.VAR_DIR}.",
            hint=f"Set {name} (or {name}_FILE) on every web and worker machine.",
            id="syncdesk.W001",
        )
        for name in getattr(settings, "GENERATED_SECRETS", [])
    ]
