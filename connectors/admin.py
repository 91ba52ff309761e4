from __future__ import annotations

from django.contrib import admin

from connectors.models import Connection


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "workspace", "status"]
    list_filter = ["kind", "status"]
    # Credentials and the token hash are never shown, even to superusers.
    exclude = ["credentials", "webhook_token_hash"]
    readonly_fields = ["paused_at", "last_tested_at", "last_error"]
