from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from connectors.models import Connection

# The admin classes are generic only in django-stubs: at run time they take no type arguments.
if TYPE_CHECKING:
    ConnectionAdminBase = admin.ModelAdmin[Connection]
else:
    ConnectionAdminBase = admin.ModelAdmin


@admin.register(Connection)
class ConnectionAdmin(ConnectionAdminBase):
    list_display = ["name", "kind", "workspace", "status"]
    list_filter = ["kind", "status"]
    # Credentials and the token hash are never shown, even to superusers.
    exclude = ["credentials", "webhook_token_hash"]
    readonly_fields = ["paused_at", "last_tested_at", "last_error"]
