"""`POST /hooks/<token>/`: the canonical webhook, answered by design.md's table.

No login and no CSRF: the unguessable token in the path is the credential (compared by hash in
constant time). The query string goes to the adapter with the body and headers and is kept with
the stored request (under the `:query` key of its headers). 202 only after the transaction
holding the body and its events commits; a database failure answers 503 (the sender retries),
never 500. Data signals of the events stored (an unmapped status) become inbox warnings.
"""

from __future__ import annotations

import json
import logging

from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connectors.models import Connection
from connectors.sources.base import WebhookRequestData, signal_warnings
from connectors.sources.patchworks import adapter as patchworks
from connectors.sources.registry import get_adapter
from monitoring.models import Flow, SourceEvent
from monitoring.pipeline import ingest
from monitoring.pipeline.flows import mark_backfill_complete, mark_catalogue_loaded, start_backfill
from monitoring.pipeline.sources import file_warnings

log = logging.getLogger(__name__)

UNKNOWN_TOKEN_LIMIT = 30  # per client address per minute, then 429


def _client(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def _unknown(request: HttpRequest) -> HttpResponse:
    key = f"hooks:unknown:{_client(request)}"
    cache.add(key, 0, timeout=60)
    try:
        seen = cache.incr(key)
    except ValueError:
        seen = 1
    if seen > UNKNOWN_TOKEN_LIMIT:
        response = JsonResponse({"error": "rate_limited"}, status=429)
        response["Retry-After"] = "60"
        return response
    return JsonResponse({"error": "not_found"}, status=404)


def _unavailable() -> JsonResponse:
    response = JsonResponse({"error": "unavailable", "retry": True}, status=503)
    response["Retry-After"] = "30"
    return response


def _headers(request: HttpRequest) -> dict[str, str]:
    return dict(request.headers.items())


def _file_signals(request_id: object) -> None:
    """The data signals of the events this request brought (an unmapped status, an error
    status at the source) into the inbox as `source_warning`s, as a poll's warnings are."""
    if not isinstance(request_id, int):
        return
    signalled = (
        SourceEvent.objects.filter(request_id=request_id, envelope__data__has_key="signal")
        .exclude(flow=None)
        .select_related("flow", "flow__workspace")
    )
    for event in signalled:
        assert event.flow is not None
        file_warnings(event.flow, signal_warnings([event.envelope]))


@csrf_exempt
@login_not_required
@never_cache
@require_POST
def receive(request: HttpRequest, token: str) -> HttpResponse:
    try:
        connection = Connection.for_webhook_token(token)
        adapter = get_adapter(connection.kind) if connection else None
        if connection is None or adapter is None:
            return _unknown(request)
        limit = ingest.max_body_bytes()
        content_type = request.content_type or ""
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > limit:
            first = request.read(ingest.STORED_PART_BYTES)
            answer = ingest.receive_too_large(
                connection, first, content_type, _headers(request), declared
            )
            return JsonResponse(answer.body, status=answer.status)
        body = request.read(limit + 1)
        if len(body) > limit:
            answer = ingest.receive_too_large(
                connection, body, content_type, _headers(request), len(body)
            )
            return JsonResponse(answer.body, status=answer.status)
        with transaction.atomic():
            answer = ingest.receive_webhook(
                connection,
                adapter,
                WebhookRequestData(
                    body=body,
                    content_type=request.META.get("CONTENT_TYPE", ""),
                    headers=_headers(request),
                    query_string=str(request.META.get("QUERY_STRING", "")),
                ),
            )
            if answer.signalled:
                _file_signals(answer.body.get("request_id"))
        return JsonResponse(answer.body, status=answer.status)
    except DatabaseError:
        log.exception("webhook could not be stored")
        return _unavailable()
    except Exception:
        log.exception("webhook failed")
        return _unavailable()


@csrf_exempt
@login_not_required
@never_cache
@require_POST
def control(request: HttpRequest, token: str) -> HttpResponse:
    """For push-only sources: `{"action": "backfill_started" | "backfill_complete" |
    "catalogue_loaded"}` on the connection's flows (all of them, or `"flow": <id>`)."""
    try:
        connection = Connection.for_webhook_token(token)
        if connection is None:
            return _unknown(request)
        try:
            document = json.loads(request.body or b"{}")
            action = document["action"]
        except (ValueError, KeyError, TypeError):
            return JsonResponse({"error": 'expected {"action": ...}'}, status=400)
        flows = Flow.objects.filter(source=connection, is_active=True)
        if document.get("flow"):
            flows = flows.filter(pk=document["flow"])
        done = []
        for flow in flows:
            if action == "backfill_started":
                start_backfill(flow)
                done.append({"flow": flow.pk, "backfill": flow.backfill_state})
            elif action == "backfill_complete":
                counts = mark_backfill_complete(flow, by="api")
                done.append({"flow": flow.pk, "backfill": flow.backfill_state, "counts": counts})
            elif action == "catalogue_loaded":
                if not flow.masters_products:
                    continue
                count = mark_catalogue_loaded(flow)
                done.append({"flow": flow.pk, "catalogue_events": count})
            else:
                return JsonResponse({"error": f"unknown action {action!r}"}, status=400)
        return JsonResponse({"flows": done})
    except DatabaseError:
        log.exception("webhook control failed")
        return _unavailable()


@csrf_exempt
@login_not_required
@never_cache
@require_POST
def receive_bearer(request: HttpRequest) -> HttpResponse:
    """`POST /hooks/` with `Authorization: Bearer <token>`: the same webhook with the token kept
    out of the URL, for Patchworks flows (the only kind that may use it). No or a malformed header
    answers 401; a token of no Patchworks connection 404 (rate-limited, as an unknown URL token).
    Neither stores anything."""
    token = patchworks.bearer_token(request.headers)
    if not token:
        response = JsonResponse({"error": "unauthorized"}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    try:
        if patchworks.connection_for_bearer(request.headers) is None:
            return _unknown(request)
    except DatabaseError:
        log.exception("webhook bearer lookup failed")
        return _unavailable()
    return receive(request, token)
