"""What every configuration page shares: its context and, for non-admins, read-only forms."""

from __future__ import annotations

from typing import Any

from accounts.access import WorkspaceAccess


def context(access: WorkspaceAccess, **extra: Any) -> dict[str, Any]:
    return {"access": access, "nav": "config", **extra}


def read_only(form: Any, access: WorkspaceAccess) -> Any:
    """Non-admins see the settings, not a form they could send."""
    if not access.is_admin:
        for field in form.fields.values():
            field.disabled = True
    return form
