from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts import audit
from accounts.access import TeamOnly, get_workspace_for_user, workspaces_for
from accounts.forms import AuditFilterForm, TeamMemberForm
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange, Membership, Team


@require_GET
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    """A person with one workspace lands in it; with several, chooses; with none, is told so."""
    mine = list(workspaces_for(request.user))
    if len(mine) == 1:
        return redirect("monitoring:overview", ws=mine[0].slug)
    return render(request, "accounts/workspaces.html", {"workspaces": mine})


@require_http_methods(["GET", "POST"])
def teams(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    form = TeamMemberForm(access.workspace)
    if request.method == "POST":
        access.require_admin()
        form = TeamMemberForm(access.workspace, request.POST)
        if form.is_valid():
            team, user = form.cleaned_data["team"], form.cleaned_data["user"]
            before = audit.snapshot(team, ["members"])
            if form.cleaned_data["action"] == "add":
                team.members.add(user)
                action = ConfigChange.Action.MEMBER_ADDED
                messages.success(request, f"{user.get_username()} added to {team.name}.")
            else:
                team.members.remove(user)
                action = ConfigChange.Action.MEMBER_REMOVED
                messages.success(request, f"{user.get_username()} removed from {team.name}.")
            # Adding someone already in the team (or removing someone not in it) changes nothing.
            audit.record_change(
                access.workspace,
                request.user,
                team,
                action,
                before,
                audit.snapshot(team, ["members"]),
                always=False,
            )
            return redirect("accounts:teams", ws=ws)
    ctx = {
        "access": access,
        "teams": access.workspace.teams.prefetch_related("members"),
        "memberships": access.workspace.memberships.select_related("user").order_by(
            "user__username"
        ),
        "form": form,
        "changes": ConfigChange.objects.filter(
            workspace=access.workspace, object_type="accounts.team"
        ).select_related("workspace")[:20],
        "nav": "config",
    }
    template = "accounts/teams.html#teams" if request.htmx else "accounts/teams.html"
    return render(request, template, ctx, status=400 if form.errors else 200)


AUDIT_PAGE_SIZE = 50


@require_GET
def audit_log(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    """Every configuration change in the workspace, newest first, filtered by object, person,
    action or text. Everyone in the workspace may read it (it never holds a secret)."""
    access = get_workspace_for_user(request, ws)
    changes = ConfigChange.objects.filter(workspace=access.workspace).select_related("workspace")
    form = AuditFilterForm(access.workspace, request.GET or None)
    if form.is_valid():
        changes = form.filter(changes)
    page = Paginator(changes, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {
        "access": access,
        "nav": "config",
        "form": form,
        "page": page,
        "query": query.urlencode(),
    }
    template = "accounts/audit.html#results" if request.htmx else "accounts/audit.html"
    return render(request, template, ctx, status=400 if form.errors else 200)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 403 page, in the site's shell: what was refused and who can do it (in the workspace of
    the URL, to its members only: the owning team's people when the refusal names a team, and
    the workspace's admins)."""
    match = getattr(request, "resolver_match", None)
    slug = match.kwargs.get("ws") if match else None
    admins: list[str] = []
    team: Team | None = None
    team_members: list[str] = []
    if slug and request.user.is_authenticated:
        mine = Membership.objects.filter(user=request.user, workspace__slug=slug).first()
        if mine is not None:
            admins = _names(
                User.objects.filter(
                    memberships__workspace=mine.workspace,
                    memberships__role=Membership.Role.ADMIN,
                )
            )
            team_slug = exception.team_slug if isinstance(exception, TeamOnly) else None
            team = mine.workspace.teams.filter(slug=team_slug).first() if team_slug else None
            team_members = _names(team.members.all()) if team else []
    reason = str(exception) or "You do not have permission to do this."
    context = {"reason": reason, "admins": admins, "team": team, "team_members": team_members}
    return render(request, "403.html", context, status=403)


def _names(users: Any) -> list[str]:
    return [u.get_full_name() or u.get_username() for u in users.order_by("username")]
