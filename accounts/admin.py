from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from accounts.models import Membership, Team, Workspace

# The admin classes are generic only in django-stubs: at run time they take no type arguments.
if TYPE_CHECKING:
    MembershipInlineBase = admin.TabularInline[Membership, Workspace]
    WorkspaceAdminBase = admin.ModelAdmin[Workspace]
    TeamAdminBase = admin.ModelAdmin[Team]
else:
    MembershipInlineBase = admin.TabularInline
    WorkspaceAdminBase = TeamAdminBase = admin.ModelAdmin


class MembershipInline(MembershipInlineBase):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(WorkspaceAdminBase):
    list_display = ["name", "slug", "currency", "created"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Team)
class TeamAdmin(TeamAdminBase):
    list_display = ["name", "slug", "workspace"]
    list_filter = ["workspace"]
    filter_horizontal = ["members"]


def superusers_only(request: object) -> bool:
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_superuser)


# The Django admin is for superusers only: workspace admins configure through Syncdesk's pages.
admin.site.has_permission = superusers_only  # type: ignore[method-assign]
admin.site.site_header = "Syncdesk (superusers)"
