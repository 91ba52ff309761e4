"""The API keys page (Configuration → API keys): members see the keys, admins make and revoke
them. A new key is shown once, in the answer to the form that made it."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts import audit
from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from api import keys
from api.forms import NewKeyForm
from api.models import ApiKey


@require_http_methods(["GET", "POST"])
def key_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    form = NewKeyForm(access.workspace)
    made = None
    if request.method == "POST":
        access.require_admin()
        form = NewKeyForm(access.workspace, request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                row, made = keys.issue_key(
                    access.workspace, data["name"], data["team"], data["scope"], request.user
                )
            except keys.NameTaken as exc:
                form.add_error("name", str(exc))
            else:
                form = NewKeyForm(access.workspace)
                messages.success(
                    request, f"Key {row.name} made: copy it now, it is not shown again."
                )
    ctx = {
        "access": access,
        "nav": "config",
        "form": form,
        "made": made,
        "keys": ApiKey.objects.filter(workspace=access.workspace).select_related(
            "team", "created_by"
        ),
        "changes": ConfigChange.objects.filter(
            workspace=access.workspace, object_type="api.apikey"
        ).select_related("workspace")[:20],
        "docs_url": reverse("api-v1:openapi-view"),
    }
    return render(request, "api/keys.html", ctx, status=400 if form.errors else 200)


@require_POST
def key_revoke(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    row = get_object_or_404(ApiKey, workspace=access.workspace, pk=pk)
    access.require_admin()
    if keys.revoke_key(row, request.user):
        messages.success(request, f"Key {row.name} revoked: it stops working at once.")
    return redirect("api:keys", ws=ws)


def _keys_page(change: ConfigChange) -> str:
    return reverse("api:keys", kwargs={"ws": change.workspace.slug})


def register_audit_page() -> None:
    audit.register_object_page("api.apikey", _keys_page)
