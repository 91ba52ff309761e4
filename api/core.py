"""/api/v1/'s core: the NinjaAPI, key authentication, the rate limit, the error shapes, and the
helpers every route starts with (the key's workspace, the right to act, cursors).

Every route takes a key (`Authorization: Bearer sdk_…`), never a session: no cookie, no CSRF,
and the sign-in redirect does not apply. Order of answers: 401 (no, unknown or revoked key),
429 (over the key's rate), 404 (a workspace or object outside the key's), 403 (a read key acting,
or a key of another team), then the route's own.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Annotated

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.dateparse import parse_datetime
from ninja import NinjaAPI, Path, Swagger
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer

from api import keys
from api.models import ApiKey
from api.schemas import MAX_ID, ErrorOut
from connectors.budget import Lane, RateBudget, TierLimit

DESCRIPTION = """Syncdesk's flows, events, exceptions inbox, reconciliation runs and alerts.

Authenticate with an API key made on the workspace's **Configuration → API keys** page:
`Authorization: Bearer sdk_…`. A key reads its workspace; a *read and act* key also acts, with
the permissions of its team (a key without a team: as a workspace admin). Lists are newest first
and paged by cursor (`next_cursor`, at most 500 items a page). Each key may make
`API_RATE_PER_MINUTE` requests a minute (600 by default); beyond that the answer is 429 with
`Retry-After`. Every error is `{"error": code, "detail": sentence}`."""


ANY_TEAM = object()  # require_act without a team: any act key may


class ApiError(Exception):
    """An answer with a status, an error code and a sentence (and maybe headers)."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


class KeyAuth(HttpBearer):
    """The key in the Authorization header: known, not revoked, within its rate."""

    openapi_description = "An API key: `sdk_` and 43 characters."

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        row = keys.find_key(token)
        if row is None:
            raise ApiError(401, "unauthorized", "This is not a Syncdesk API key.", _challenge())
        if row.is_revoked:
            raise ApiError(401, "revoked", "This API key was revoked.", _challenge())
        throttle(row)
        keys.mark_used(row)
        return row


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="syncdesk"'}


def throttle(row: ApiKey) -> None:
    """Count the request against the key's window, shared by every process through the rate
    budget's store (the database, or Redis when configured); 429 beyond it."""
    limit = TierLimit(int(settings.API_RATE_PER_MINUTE), 60.0)
    # The limit is part of the window's name: the store keeps a window's limit from its first
    # call, so a changed setting starts fresh windows rather than keeping the old figure.
    budget = RateBudget(f"api-key:{row.pk}:{limit.limit}", {"requests": limit}, reserve=0.0)
    grant = budget.acquire("requests", Lane.REALTIME)
    if not grant:
        wait = max(1, math.ceil(grant.wait))
        raise ApiError(
            429,
            "rate_limited",
            f"This key made its {limit.limit} requests of the minute: try again in {wait} s.",
            {"Retry-After": str(wait)},
        )


api = NinjaAPI(
    title="Syncdesk API",
    version="1",
    description=DESCRIPTION,
    auth=KeyAuth(),
    urls_namespace="api-v1",
    docs=Swagger(settings={"persistAuthorization": True}),
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def _error(request: HttpRequest, exc: ApiError | type[ApiError]) -> HttpResponse:
    assert isinstance(exc, ApiError)
    response = api.create_response(
        request, {"error": exc.error, "detail": exc.detail}, status=exc.status
    )
    for name, value in exc.headers.items():
        response[name] = value
    return response


api.add_exception_handler(ApiError, _error)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(
        request,
        ApiError(401, "unauthorized", "Send an API key: Authorization: Bearer sdk_…", _challenge()),
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, ApiError(404, "not_found", "Not found."))


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, ApiError(403, "forbidden", str(exc) or "Not allowed."))


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors
    ]
    body = {"error": "invalid", "detail": "Some of the input was refused.", "errors": errors}
    return api.create_response(request, body, status=422)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = "bad_request" if exc.status_code == 400 else "error"
    return _error(request, ApiError(exc.status_code, code, str(exc)))


# -- what every route starts with --------------------------------------------------------------

ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 422: ErrorOut, 429: ErrorOut}
READ = ERRORS
ACT = {**ERRORS, 403: ErrorOut, 409: ErrorOut}
MAX_PAGE = 500
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def key_access(request: HttpRequest, ws: str) -> keys.KeyAccess:
    """The key's access to workspace `ws`: 404 for any workspace but the key's own."""
    row: ApiKey = request.auth  # type: ignore[attr-defined]
    if row.workspace.slug != ws:
        raise Http404("No such workspace")
    return keys.access_for(row)


def require_act(ka: keys.KeyAccess, team_slug: str | None | object = ANY_TEAM) -> None:
    """403 for a read key, or (given the owner's team) for a key of another team."""
    if not ka.key.can_act:
        raise PermissionDenied("This key may only read: make a 'read and act' key to act.")
    if team_slug is not ANY_TEAM:
        ka.access.require_team(team_slug)  # type: ignore[arg-type]


def encode_cursor(*parts: object) -> str:
    raw = "|".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, count: int) -> list[str] | None:
    """The cursor's parts, or None without one; 400 for a cursor Syncdesk did not give."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    parts = raw.split("|")
    if len(parts) != count:
        raise ApiError(400, "bad_cursor", "This cursor was not given by this list.")
    return parts


def cursor_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 < number <= MAX_ID:
        raise ApiError(400, "bad_cursor", "This cursor was not given by this list.")
    return number


def cursor_time(value: str) -> datetime:
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ApiError(400, "bad_cursor", "This cursor was not given by this list.")
    return parsed
