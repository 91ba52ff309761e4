"""Connection pages: list, detail, create/edit forms, "Test connection" and webhook token rotation.

Everyone in the workspace reads them; only admins change anything (403 otherwise). Credentials are
write-only: a page shows a secret as "set" and never its value. Every change writes an audit row
(`accounts.audit`) whose diff names changed secrets without their values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import select_template
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.access import get_object_for_user, get_workspace_for_user
from accounts.fields import decrypt, encrypt
from accounts.http import AuthenticatedHttpRequest
from accounts.models import ConfigChange
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import ConnectorError, DotDigitalError, explain
from connectors.forms import (
    AUDITED_FIELDS,
    KIND_SETTINGS,
    ConnectionForm,
    is_webhook_kind,
    scrub,
    secret_fields,
    secret_rows,
)
from connectors.models import Connection
from connectors.sources.base import SourceError
from connectors.sources.registry import get_adapter

logger = logging.getLogger(__name__)

# The session key holding a just-made webhook token until the next page of its connection shows
# it (once): a redirect after POST must not re-create the connection on reload.
NEW_TOKEN_SESSION_KEY = "connectors.new_webhook_token"
# A person waits on "Test connection": never wait long on the shared rate budget.
TEST_MAX_WAIT = 2.0


@require_GET
def setup_guide(request: AuthenticatedHttpRequest, ws: str, kind: str) -> HttpResponse:
    """What an admin configures in the source system for this kind of connection."""
    access = get_workspace_for_user(request, ws)
    if kind not in Connection.Kind.values:
        raise Http404("No such connector")
    template = select_template([f"connectors/setup/{kind}.html", "connectors/setup/_generic.html"])
    connections = Connection.objects.filter(workspace=access.workspace, kind=kind)
    return render(
        request,
        template.template.name,
        {
            "access": access,
            "nav": "config",
            "kind": kind,
            "kind_label": Connection.Kind(kind).label,
            "connections": connections,
            "webhook_example": webhook_url(request, "<your-connection-token>"),
        },
    )


@require_GET
def connection_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    connections = Connection.objects.filter(workspace=access.workspace).order_by("kind", "name")
    return render(
        request,
        "connectors/list.html",
        {
            "access": access,
            "nav": "config",
            "connections": connections,
            "kinds": [(k, Connection.Kind(k).label) for k in KIND_SETTINGS],
        },
    )


@require_http_methods(["GET", "POST"])
def connection_create(request: AuthenticatedHttpRequest, ws: str, kind: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    access.require_admin()
    if kind not in KIND_SETTINGS:
        raise Http404("No such connector")
    form = ConnectionForm(
        access.workspace, kind, request.POST if request.method == "POST" else None
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            conn = form.save()
            token = conn.rotate_webhook_token() if is_webhook_kind(kind) else None
            audit.record_change(
                access.workspace,
                request.user,
                conn,
                ConfigChange.Action.CREATED,
                None,
                _snapshot(conn),
                secret_fields=secret_fields(conn),
            )
        logger.info("Connection %s (%s) created by %s", conn.pk, kind, request.user.pk)
        if token:
            _show_token_once(request, conn, token)
        messages.success(request, f"{conn.name} created.")
        return redirect("connectors:detail", ws=ws, pk=conn.pk)
    return _render_form(request, access, form, kind, None)


@never_cache  # it may show a webhook token once: no copy of it in any cache
@require_GET
def connection_detail(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    conn, access = get_object_for_user(request, Connection, ws, pk=pk)
    new_token = _pop_token(request, conn)
    return render(
        request, "connectors/detail.html", _detail_context(request, access, conn, new_token)
    )


@require_http_methods(["GET", "POST"])
def connection_edit(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    conn, access = get_object_for_user(request, Connection, ws, pk=pk)
    access.require_admin()
    data = request.POST if request.method == "POST" else None
    form = ConnectionForm(access.workspace, conn.kind, data, instance=conn)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            before = _snapshot(conn)
            conn = form.save()
            audit.record_change(
                access.workspace,
                request.user,
                conn,
                ConfigChange.Action.CHANGED,
                before,
                _snapshot(conn),
                secret_fields=secret_fields(conn),
            )
        logger.info("Connection %s (%s) changed by %s", conn.pk, conn.kind, request.user.pk)
        messages.success(request, f"{conn.name} saved.")
        return redirect("connectors:detail", ws=ws, pk=conn.pk)
    return _render_form(request, access, form, conn.kind, conn)


@require_POST
def connection_test(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """Check the credentials against the outside system; success resumes a paused connection."""
    conn, access = get_object_for_user(request, Connection, ws, pk=pk)
    access.require_admin()
    before = _snapshot(conn)
    outcome = check_connection(conn)
    audit.record_change(
        access.workspace,
        request.user,
        conn,
        ConfigChange.Action.TESTED,
        before,
        _snapshot(conn),
        secret_fields=secret_fields(conn),
        note=outcome.summary,
    )
    if request.htmx:
        ctx = _detail_context(request, access, conn, None)
        ctx["outcome"] = outcome
        return render(request, "connectors/detail.html#status", ctx)
    if outcome.ok:
        messages.success(request, outcome.summary)
    else:
        messages.error(request, outcome.summary)
    return redirect("connectors:detail", ws=ws, pk=conn.pk)


@require_POST
def connection_rotate_token(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """A new webhook token, shown once; the old one stops working at once."""
    conn, access = get_object_for_user(request, Connection, ws, pk=pk)
    access.require_admin()
    if not is_webhook_kind(conn.kind):
        raise Http404("This connection has no webhook")
    with transaction.atomic():
        token = conn.rotate_webhook_token()
        audit.record_change(
            access.workspace,
            request.user,
            conn,
            ConfigChange.Action.TOKEN_ROTATED,
            note="A new webhook token; the old one no longer works.",
        )
    logger.info("Connection %s: webhook token rotated by %s", conn.pk, request.user.pk)
    _show_token_once(request, conn, token)
    messages.success(request, "A new webhook token: the old one no longer works.")
    return redirect("connectors:detail", ws=ws, pk=conn.pk)


# -- "Test connection" ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TestOutcome:
    ok: bool
    summary: str
    resumed: bool = False


def check_connection(conn: Connection) -> TestOutcome:
    """Test `conn` against its system, record `last_tested_at`/`last_error`, and resume it when
    the test succeeds (the engine's sweeper then picks up its queued work: it only skips paused
    connections). DotDigital: account-info, which also discovers and stores the region's endpoint.
    Sources: the adapter's `test_connection`. Never raises; no secret reaches the summary or logs.
    """
    error = ""
    summary = ""
    try:
        if conn.kind == Connection.Kind.DOTDIGITAL:
            client = DotDigitalClient.for_connection(conn, max_wait=TEST_MAX_WAIT)
            info = client.discover()
            summary = (
                f"DotDigital answered: account {info.account_id}, endpoint {info.api_endpoint}."
            )
        else:
            adapter = get_adapter(conn.kind)
            if adapter is None:
                raise SourceError(
                    f"Syncdesk cannot talk to {conn.get_kind_display()} yet (no adapter).",
                    permanent=True,
                )
            summary = adapter.test_connection(conn)
    except DotDigitalError as exc:
        error = explain(exc, retry="Test again in a minute.")
    except (ConnectorError, SourceError) as exc:
        error = exc.message
    except Exception as exc:  # a test button reports, it does not crash the page
        # Not logged with its traceback: an HTTP library's exception can carry the request.
        error = f"The test failed unexpectedly ({type(exc).__name__})."
    error = scrub(error, conn)[:1000]
    summary = scrub(summary, conn)[:1000]
    Connection.objects.filter(pk=conn.pk).update(last_tested_at=timezone.now(), last_error=error)
    conn.refresh_from_db(fields=["last_tested_at", "last_error", "options"])
    if error:
        logger.info("Connection %s (%s) test failed: %s", conn.pk, conn.kind, error)
        return TestOutcome(False, f"Test failed: {error}")
    resumed = conn.resume()
    logger.info(
        "Connection %s (%s) test passed%s", conn.pk, conn.kind, "; resumed" if resumed else ""
    )
    if resumed:
        summary += " The connection was paused and is now active again."
    return TestOutcome(True, summary or "The connection works.", resumed)


# -- helpers ---------------------------------------------------------------------------------------


def _snapshot(conn: Connection) -> dict[str, Any]:
    return audit.snapshot(conn, AUDITED_FIELDS, secret_fields=secret_fields(conn))


def webhook_url(request: AuthenticatedHttpRequest, token: str) -> str:
    """The absolute webhook URL for `token` ('' while the engine's webhook URL is absent)."""
    try:
        path = reverse("monitoring:webhook", kwargs={"token": "TOKEN"})
    except NoReverseMatch:
        return ""
    return request.build_absolute_uri(path).replace("TOKEN", token)


def _show_token_once(request: AuthenticatedHttpRequest, conn: Connection, token: str) -> None:
    # Encrypted like credentials: the session table never holds the token in plain text.
    request.session[NEW_TOKEN_SESSION_KEY] = {"pk": conn.pk, "token": encrypt(token)}


def _pop_token(request: AuthenticatedHttpRequest, conn: Connection) -> str | None:
    held = request.session.get(NEW_TOKEN_SESSION_KEY)
    if not isinstance(held, dict) or held.get("pk") != conn.pk:
        return None
    del request.session[NEW_TOKEN_SESSION_KEY]
    sealed = str(held.get("token") or "")
    return decrypt(sealed) if sealed else None


def _detail_context(
    request: AuthenticatedHttpRequest, access: Any, conn: Connection, new_token: str | None
) -> dict[str, Any]:
    return {
        "access": access,
        "nav": "config",
        "conn": conn,
        "rows": secret_rows(conn),
        "has_webhook": is_webhook_kind(conn.kind),
        "new_token": new_token,
        "new_webhook_url": webhook_url(request, new_token) if new_token else "",
        "webhook_pattern": webhook_url(request, "…"),
        "changes": audit.history_of(conn).select_related("workspace")[:50],
    }


def _render_form(
    request: AuthenticatedHttpRequest,
    access: Any,
    form: ConnectionForm,
    kind: str,
    conn: Connection | None,
) -> HttpResponse:
    return render(
        request,
        "connectors/form.html",
        {
            "access": access,
            "nav": "config",
            "form": form,
            "kind": kind,
            "kind_label": Connection.Kind(kind).label,
            "conn": conn,
        },
        status=400 if form.errors else 200,
    )
