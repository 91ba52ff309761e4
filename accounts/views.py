from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.access import get_workspace_for_user, workspaces_for
from accounts.forms import TeamMemberForm
from accounts.http import AuthenticatedHttpRequest


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
            if form.cleaned_data["action"] == "add":
                team.members.add(user)
                messages.success(request, f"{user.get_username()} added to {team.name}.")
            else:
                team.members.remove(user)
                messages.success(request, f"{user.get_username()} removed from {team.name}.")
            return redirect("accounts:teams", ws=ws)
    ctx = {
        "access": access,
        "teams": access.workspace.teams.prefetch_related("members"),
        "memberships": access.workspace.memberships.select_related("user").order_by(
            "user__username"
        ),
        "form": form,
    }
    template = "accounts/teams.html#teams" if request.htmx else "accounts/teams.html"
    return render(request, template, ctx, status=400 if form.errors else 200)
