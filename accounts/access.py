"""The one way a view reaches workspace-owned data: starting from the signed-in user's membership.

Outside a person's workspaces everything is a 404 (we do not confirm that a workspace or object
exists); inside, an action their role or team does not allow is a 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest

from accounts.models import Membership, Workspace

if TYPE_CHECKING:
    from django.contrib.auth.models import User

M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class WorkspaceAccess:
    """What the signed-in user may do in one workspace."""

    workspace: Workspace
    membership: Membership
    team_slugs: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.membership.is_admin

    def can_act_for(self, team_slug: str | None) -> bool:
        """True for an admin, or for a member of the team that owns the thing."""
        return self.is_admin or (team_slug is not None and team_slug in self.team_slugs)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("Only a workspace admin can do this.")

    def require_team(self, team_slug: str | None) -> None:
        if not self.can_act_for(team_slug):
            team = self.workspace.teams.filter(slug=team_slug).first() if team_slug else None
            owner = f"the {team.name} team" if team else "the owning team"
            raise TeamOnly(f"Only {owner} or a workspace admin can do this.", team_slug)


class TeamOnly(PermissionDenied):
    """Refused: only the team `team_slug` (or an admin) may do this; the 403 page names them."""

    def __init__(self, message: str, team_slug: str | None) -> None:
        super().__init__(message)
        self.team_slug = team_slug


def get_workspace_for_user(request: HttpRequest, slug: str) -> WorkspaceAccess:
    user = request.user
    if not user.is_authenticated:
        raise Http404("No such workspace")
    membership = (
        Membership.objects.select_related("workspace")
        .filter(user=user, workspace__slug=slug)
        .first()
    )
    if membership is None:
        raise Http404("No such workspace")
    teams = frozenset(
        membership.workspace.teams.filter(members=user).values_list("slug", flat=True)
    )
    return WorkspaceAccess(membership.workspace, membership, teams)


def get_object_for_user(
    request: HttpRequest,
    queryset: models.QuerySet[M] | type[M],
    slug: str,
    **lookup: Any,
) -> tuple[M, WorkspaceAccess]:
    """A workspace-owned object (it has a ``workspace`` foreign key), or 404."""
    access = get_workspace_for_user(request, slug)
    qs = queryset if isinstance(queryset, models.QuerySet) else queryset._default_manager.all()
    try:
        obj = qs.get(workspace=access.workspace, **lookup)
    except (ObjectDoesNotExist, ValueError):
        raise Http404("Not found") from None
    return obj, access


def workspaces_for(user: User) -> models.QuerySet[Workspace]:
    return Workspace.objects.filter(memberships__user=user).order_by("name")
