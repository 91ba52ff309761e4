"""The privacy page: a workspace admin erases one person's data (monitoring.privacy.erasure)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from monitoring.privacy.erasure import forget_contact
from monitoring.privacy.retention import retention_days


class ErasureForm(forms.Form):
    email = forms.EmailField(label="Email address of the person to forget", max_length=254)
    dotdigital = forms.BooleanField(label="Also delete their contact in DotDigital", required=False)
    confirm = forms.BooleanField(
        label="I understand this cannot be undone",
        required=True,
        error_messages={"required": "Tick this to confirm."},
    )


@never_cache
@require_http_methods(["GET", "POST"])
def privacy(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    form = ErasureForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        report = forget_contact(
            form.cleaned_data["email"],
            access.workspace,
            actor=request.user,
            dotdigital=form.cleaned_data["dotdigital"],
        )
        messages.success(request, f"{report.summary()} Audited as contact {report.digest[:16]}.")
        return redirect("reliability:privacy", ws=ws)
    return render(
        request,
        "monitoring/privacy.html",
        {"access": access, "form": form, "retention_days": retention_days()},
    )
