"""Outbound webhook pages under the configuration: members read, admins change (403 inside, 404
outside), every change audited. The signing secret is shown once after creation, and afterwards
only to an admin who asks (audited); members see the receiver's host, not its URL."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.access import WorkspaceAccess, get_object_for_user, get_workspace_for_user
from accounts.fields import decrypt, encrypt
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from outbound import delivery
from outbound.forms import AUDITED_FIELDS, SubscriptionForm
from outbound.models import Delivery, Subscription, new_signing_secret

NEW_SECRET_SESSION_KEY = "outbound.new_signing_secret"
LOG_ROWS = 50


def _audit_page(change: ConfigChange) -> str:
    """An audit row's link: the webhook's page while it exists, else the list."""
    ws = change.workspace.slug
    pk = change.object_id
    if pk.isdigit() and Subscription.objects.filter(workspace=change.workspace, pk=pk).exists():
        return reverse("outbound:detail", kwargs={"ws": ws, "pk": int(pk)})
    return reverse("outbound:list", kwargs={"ws": ws})


def register_audit_page() -> None:
    audit.register_object_page("outbound.subscription", _audit_page)


def _context(access: WorkspaceAccess, **extra: Any) -> dict[str, Any]:
    return {"access": access, "nav": "config", **extra}


# The URL is audited as a secret (the diff says only "changed"): members read the audit, and a
# receiver's URL may carry its own token, as Slack's do.
SECRET_FIELDS = ("url",)


def _snapshot(subscription: Subscription) -> dict[str, Any]:
    return audit.snapshot(subscription, AUDITED_FIELDS, secret_fields=SECRET_FIELDS)


def _audit(
    request: AuthenticatedHttpRequest,
    access: WorkspaceAccess,
    subscription: Subscription,
    action: str,
    before: dict[str, Any] | None,
    *,
    note: str = "",
) -> None:
    after = None if action == ConfigChange.Action.DELETED else _snapshot(subscription)
    audit.record_change(
        access.workspace,
        request.user,
        subscription,
        action,
        before,
        after,
        note=note,
        secret_fields=SECRET_FIELDS,
    )


def _page(ws: str, subscription: Subscription) -> HttpResponse:
    return redirect("outbound:detail", ws=ws, pk=subscription.pk)


@require_http_methods(["GET", "POST"])
def subscription_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    form = SubscriptionForm() if access.is_admin else None
    status = 200
    if request.method == "POST":
        access.require_admin()
        form = SubscriptionForm(request.POST)
        if form.is_valid():
            secret = new_signing_secret()
            with transaction.atomic():
                subscription = form.save(commit=False)
                subscription.workspace = access.workspace
                subscription.created_by = request.user
                subscription.secret = {"signing_secret": secret}
                subscription.save()
                _audit(request, access, subscription, ConfigChange.Action.CREATED, None)
            # Encrypted like credentials: the session table never holds the secret in clear.
            request.session[NEW_SECRET_SESSION_KEY] = {
                "pk": subscription.pk,
                "secret": encrypt(secret),
            }
            messages.success(request, f"Webhook {subscription.name} created.")
            return _page(ws, subscription)
        status = 400
    subscriptions = Subscription.objects.filter(workspace=access.workspace)
    return render(
        request,
        "outbound/list.html",
        _context(access, subscriptions=subscriptions, form=form),
        status=status,
    )


def _pop_new_secret(request: AuthenticatedHttpRequest, subscription: Subscription) -> str:
    held = request.session.get(NEW_SECRET_SESSION_KEY)
    if not isinstance(held, dict) or held.get("pk") != subscription.pk:
        return ""
    del request.session[NEW_SECRET_SESSION_KEY]
    return decrypt(str(held.get("secret") or ""))


def _detail(
    request: AuthenticatedHttpRequest,
    access: WorkspaceAccess,
    subscription: Subscription,
    *,
    secret: str = "",
    secret_is_new: bool = False,
) -> HttpResponse:
    deliveries = (
        Delivery.objects.filter(subscription=subscription)
        .prefetch_related("attempt_rows")
        .order_by("-created", "-pk")[:LOG_ROWS]
    )
    return render(
        request,
        "outbound/detail.html",
        _context(
            access,
            subscription=subscription,
            deliveries=deliveries,
            secret=secret,
            secret_is_new=secret_is_new,
            changes=audit.history_of(subscription)[:30],
        ),
    )


@never_cache  # it may show the signing secret once: no copy of it in any cache
@require_GET
def subscription_detail(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    secret = _pop_new_secret(request, subscription) if access.is_admin else ""
    return _detail(request, access, subscription, secret=secret, secret_is_new=bool(secret))


@never_cache
@require_POST
def subscription_secret(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """An admin asks to see the signing secret again: shown on this answer only, and audited."""
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    access.require_admin()
    audit.record_change(
        access.workspace,
        request.user,
        subscription,
        ConfigChange.Action.CHANGED,
        always=True,
        note="Signing secret revealed.",
    )
    return _detail(request, access, subscription, secret=subscription.signing_secret)


@require_http_methods(["GET", "POST"])
def subscription_edit(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    access.require_admin()
    form = SubscriptionForm(instance=subscription)
    status = 200
    if request.method == "POST":
        before = _snapshot(subscription)
        form = SubscriptionForm(request.POST, instance=subscription)
        if form.is_valid():
            with transaction.atomic():
                subscription = form.save()
                _audit(request, access, subscription, ConfigChange.Action.CHANGED, before)
            messages.success(request, f"Webhook {subscription.name} saved.")
            return _page(ws, subscription)
        status = 400
    return render(
        request,
        "outbound/edit.html",
        _context(access, subscription=subscription, form=form),
        status=status,
    )


@require_POST
def subscription_pause(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    access.require_admin()
    before = _snapshot(subscription)
    with transaction.atomic():
        if delivery.pause(subscription, f"Paused by {request.user.get_username()}."):
            _audit(request, access, subscription, ConfigChange.Action.CHANGED, before)
    messages.success(request, f"Webhook {subscription.name} paused: its events wait.")
    return _page(ws, subscription)


@require_POST
def subscription_resume(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    access.require_admin()
    before = _snapshot(subscription)
    if delivery.resume(subscription):
        _audit(request, access, subscription, ConfigChange.Action.CHANGED, before)
    messages.success(request, f"Webhook {subscription.name} resumed: waiting events are sent.")
    return _page(ws, subscription)


@require_POST
def subscription_test(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    access.require_admin()
    with transaction.atomic():
        delivery.queue_test(subscription, request.user)
        audit.record_change(
            access.workspace,
            request.user,
            subscription,
            ConfigChange.Action.TESTED,
            note="A test event queued.",
        )
    messages.success(request, "A test event is on its way; its outcome shows in the log below.")
    return _page(ws, subscription)


@require_POST
def subscription_delete(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    subscription, access = get_object_for_user(request, Subscription, ws, pk=pk)
    access.require_admin()
    before = _snapshot(subscription)
    with transaction.atomic():
        _audit(request, access, subscription, ConfigChange.Action.DELETED, before)
        delivery.remove(subscription)
    messages.success(request, f"Webhook {subscription.name} deleted.")
    return redirect("outbound:list", ws=ws)
