"""HTTP front: routing, Basic auth, account failures, rate limits, faults and the call log."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import contacts, control, imports, insight, v2
from .context import Ctx, Reply
from .errors import AUTH_DENIED, ApiError
from .faults import Faults
from .profiles import Profile
from .ratelimit import FLAT_MESSAGE, RateLimiter
from .store import Store

Handler = Callable[..., Reply]
SEG = r"([^/]+)"


def _owner(groups: dict[str, str]) -> tuple[str, str] | None:
    if "identifier" in groups:
        return groups.pop("identifier"), groups.pop("value")
    return None


def _insight(fn: Callable[..., Reply]) -> Handler:
    def call(ctx: Ctx, **groups: str) -> Reply:
        owner = _owner(groups)
        return fn(ctx, owner=owner, **groups)

    return call


ACCOUNT = r"/insightData/v3/account/(?P<name>[^/]+)"
OWNED = r"/insightData/v3/contacts/(?P<identifier>[^/]+)/(?P<value>[^/]+)/(?P<name>[^/]+)"
CONTACT = r"/contacts/v3/(?P<identifier>[^/]+)/(?P<value>[^/]+)"

ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", r"/v2/account-info", v2.account_info, "read"),
    ("GET", r"/v2/server-time", v2.server_time, "read"),
    ("GET", r"/v2/data-fields", v2.list_data_fields, "read"),
    ("POST", r"/v2/data-fields", v2.create_data_field, "single"),
    ("DELETE", r"/v2/data-fields/(?P<name>[^/]+)", v2.delete_data_field, "single"),
    ("GET", r"/v2/address-books", v2.list_address_books, "read"),
    ("POST", r"/v2/address-books", v2.create_address_book, "single"),
    ("GET", r"/v2/address-books/(?P<list_id>\d{1,10})", v2.get_address_book, "read"),
    ("DELETE", r"/v2/address-books/(?P<list_id>\d{1,10})", v2.delete_address_book, "single"),
    (
        "DELETE",
        r"/v2/address-books/(?P<list_id>\d{1,10})/contacts/(?P<contact_id>\d{1,10})",
        v2.remove_from_address_book,
        "single",
    ),
    ("GET", r"/v2/contacts/suppressed-since/(?P<date>[^/]+)", v2.suppressed_since, "read"),
    ("POST", r"/v2/contacts/unsubscribe", v2.unsubscribe, "single"),
    ("GET", r"/v2/programs", v2.list_programs, "read"),
    ("POST", r"/v2/programs/enrolments", v2.enrol, "single"),
    (
        "GET",
        r"/v2/programs/enrolments/(?P<enrolment_id>[0-9a-fA-F-]{36})",
        v2.get_enrolment,
        "status",
    ),
    ("GET", r"/v2/programs/(?P<program_id>\d{1,10})", v2.get_program, "read"),
    ("PUT", r"/contacts/v3/import", imports.put_contact_import, "import"),
    ("GET", r"/contacts/v3/import/(?P<import_id>[^/]+)", imports.get_contact_import, "status"),
    ("GET", r"/contacts/v3", contacts.list_contacts, "read"),
    ("POST", r"/contacts/v3", contacts.create_contact, "single"),
    ("PATCH", CONTACT, contacts.patch_contact, "single"),
    ("GET", CONTACT, contacts.get_contact, "single"),
    ("PUT", CONTACT, contacts.replace_contact, "single"),
    ("DELETE", CONTACT, contacts.delete_contact, "single"),
    ("PUT", r"/insightData/v3/import", imports.put_insight_import, "import"),
    ("GET", r"/insightData/v3/import/(?P<import_id>[^/]+)", imports.get_insight_import, "status"),
    ("GET", r"/insightData/v3/async/(?P<job_id>[^/]+)", insight.get_async_job, "status"),
    ("GET", r"/insightData/v3/collections", insight.list_collections, "read"),
    (
        "DELETE",
        r"/insightData/v3/collections/(?P<name>[^/]+)",
        insight.delete_collection,
        "single",
    ),
    ("GET", r"/insightData/v3/account", insight.list_account_collections, "read"),
    ("GET", r"/insightData/v3/collections/(?P<name>[^/]+)/schema", insight.get_schema, "read"),
    ("POST", r"/insightData/v3/collections/(?P<name>[^/]+)", insight.post_collection, "single"),
    ("GET", ACCOUNT, _insight(insight.list_records), "read"),
    ("GET", ACCOUNT + r"/(?P<key>[^/]+)", _insight(insight.get_record), "single"),
    ("PUT", ACCOUNT + r"/(?P<key>[^/]+)", _insight(insight.put_record), "single"),
    ("DELETE", ACCOUNT + r"/(?P<key>[^/]+)", _insight(insight.delete_record), "single"),
    ("GET", OWNED, _insight(insight.list_records), "read"),
    ("GET", OWNED + r"/(?P<key>[^/]+)", _insight(insight.get_record), "single"),
    ("PUT", OWNED + r"/(?P<key>[^/]+)", _insight(insight.put_record), "single"),
    ("DELETE", OWNED + r"/(?P<key>[^/]+)", _insight(insight.delete_record), "single"),
]
COMPILED = [(m, re.compile(f"^{p}$"), h, t) for m, p, h, t in ROUTES]


def family_of(path: str) -> str:
    if path.startswith("/contacts/v3"):
        return "v3c"
    if path.startswith("/insightData/v3"):
        return "v3i"
    return "v2"


def route(method: str, path: str) -> tuple[Handler | None, dict[str, str], str, bool]:
    """(handler, path params, tier, path known under another method)."""
    known = False
    for m, pattern, handler, tier in COMPILED:
        match = pattern.match(path)
        if match is None:
            continue
        if m == method:
            return handler, {k: unquote(v) for k, v in match.groupdict().items()}, tier, True
        known = True
    return None, {}, "read", known


class App:
    def __init__(self, store: Store, profile: Profile, host: str, port: int) -> None:
        self.store = store
        self.start_profile = profile
        self.profile = profile
        self.host, self.port = host, port
        self.limiter = RateLimiter()
        self.faults = Faults()
        self.account: dict[str, Any] = {}
        self.stop = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.store.reset()
        self.profile = self.start_profile
        self.limiter.reset()
        self.faults.clear()
        self.account = {}

    def users(self) -> dict[str, tuple[str, str | None]]:
        with self.store.connect() as db:
            return {
                r["username"]: (r["password"], r["scheme"])
                for r in db.execute("SELECT * FROM api_users")
            }

    def add_user(self, username: str, password: str, scheme: str | None = None) -> None:
        if scheme not in (None, "tiered", "flat"):
            raise ValueError("scheme must be tiered or flat")
        with self.store.connect() as db, self.store.write(db):
            db.execute(
                "INSERT INTO api_users (username, password, scheme) VALUES (?,?,?) "
                "ON CONFLICT (username) DO UPDATE SET password = excluded.password, "
                "scheme = excluded.scheme",
                (username, password, scheme),
            )

    def settle_forever(self) -> None:
        """Apply finished imports in the background so state appears without a status poll."""
        while not self.stop.wait(0.2):
            try:
                with self.store.connect() as db:
                    imports.settle(
                        self.store,
                        db,
                        insight.Limits(
                            self.profile.insight_max_string, self.profile.insight_max_key
                        ),
                    )
            except Exception:
                traceback.print_exc(file=sys.stderr)


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, keep-alive clients wait ~40 ms.
    disable_nagle_algorithm = True
    server_version = "DotDigitalSandbox/1.0"
    app: App

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.handle_call("GET")

    def do_POST(self) -> None:
        self.handle_call("POST")

    def do_PUT(self) -> None:
        self.handle_call("PUT")

    def do_PATCH(self) -> None:
        self.handle_call("PATCH")

    def do_DELETE(self) -> None:
        self.handle_call("DELETE")

    # Methods no operation uses still get DotDigital's JSON 405/404, not the stdlib's HTML 501.
    def do_OPTIONS(self) -> None:
        self.handle_call("OPTIONS")

    def do_TRACE(self) -> None:
        self.handle_call("TRACE")

    def do_QUERY(self) -> None:
        self.handle_call("QUERY")

    # -- plumbing -------------------------------------------------------------------------------

    def read_body(self, limit: int) -> bytes | None:
        """The body, or None when it is over `limit` (then it is read and thrown away)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            return None
        return self.rfile.read(length) if length else b""

    def send(self, reply: Reply) -> None:
        if reply.body is None:
            payload = b""
        elif isinstance(reply.body, bytes | str) and not reply.content_type.startswith(
            "application/json"
        ):
            payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        else:
            payload = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            if payload or reply.status not in (204, 304):
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if payload:
                self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def handle_call(self, method: str) -> None:
        app = self.app
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            control_body = self.read_body(app.profile.max_body_bytes) or b""
            self.send(control.handle(self, method, path, query, control_body))
            return
        family = family_of(path)
        handler, params, tier, known = route(method, path)
        body = self.read_body(app.profile.max_body_bytes)
        plan = app.faults.plan(method, path)
        if plan.drop and not app.faults.drop_after_processing:
            self.log_call(method, path, tier, 0, None, {"fault": "drop"})
            self.drop()
            return
        with app.store.connect() as db:
            ctx = Ctx(app, db, method, path, query, body or b"", family)
            try:
                if body is None:
                    raise too_large(family, app.profile.max_body_bytes)
                reply = self.dispatch(ctx, handler, params, tier, known, plan)
            except ApiError as exc:
                reply = Reply(exc.status, exc.body(family), dict(exc.headers))
            except Exception:
                traceback.print_exc(file=sys.stderr)
                reply = Reply(
                    500,
                    ApiError(
                        500,
                        message="An error has occurred. ERROR_UNKNOWN",
                        code="server:internalError",
                        description="An internal error occurred",
                    ).body(family),
                )
            reply.headers = {**ctx.rate_headers, **reply.headers}
            self.log_call(method, path, tier, reply.status, ctx.api_user, ctx.note, db)
        if plan.drop:
            self.drop()
            return
        delay = app.profile.latency_ms / 1000 + plan.latency_s + plan.hang_s
        if delay > 0:
            time.sleep(delay)
        self.send(reply)

    def dispatch(
        self,
        ctx: Ctx,
        handler: Handler | None,
        params: dict[str, str],
        tier: str,
        known: bool,
        plan: Any,
    ) -> Reply:
        app = ctx.app
        if plan.error_status:
            ctx.note["fault"] = "error"
            raise server_error(plan.error_status)
        if plan.rate_limited:
            ctx.note["fault"] = "rate_limit"
            raise too_many(app.limiter.storm_headers(tier, app.profile, ctx.now))
        self.account_failure(ctx)
        user, scheme = self.authenticate()
        ctx.api_user = user
        scheme = scheme or app.profile.default_scheme
        if scheme == "flat":
            if not app.limiter.flat(app.profile, ctx.now).allowed:
                raise ApiError(
                    400,
                    message=FLAT_MESSAGE,
                    code="server:apiUsageExceeded",
                    description=FLAT_MESSAGE,
                )
        else:
            decision = app.limiter.tiered(tier, app.profile, ctx.now)
            ctx.rate_headers = decision.headers
            if not decision.allowed:
                raise too_many(decision.headers)
        if handler is None:
            if known:
                raise ApiError(
                    405,
                    message="The requested resource does not support this method.",
                    code="server:methodNotAllowed",
                    description="The requested resource does not support this method",
                )
            raise ApiError(
                404,
                message="No HTTP resource was found that matches the request URI.",
                code="server:notFound",
                description="Resource not found",
            )
        if plan.crash:
            raise RuntimeError("injected sandbox crash (faults: crash)")
        return handler(ctx, **params)

    def account_failure(self, ctx: Ctx) -> None:
        failure = ctx.app.account.get("failure")
        if not failure:
            return
        match = ctx.app.account.get("match")
        if match and not ctx.path.startswith(match):
            return
        if failure == "password_changed":
            raise ApiError(
                401,
                message=AUTH_DENIED,
                code="server:unauthorized",
                description=AUTH_DENIED,
                headers={"WWW-Authenticate": 'Basic realm="api"'},
            )
        if failure == "feature_not_active":
            text = "This feature is not active for your account. ERROR_FEATURENOTACTIVE"
            raise ApiError(403, message=text, code="server:featureNotActive", description=text)
        if failure == "wrong_region" and ctx.path != "/v2/account-info":
            raise ApiError(
                403,
                message="Access is denied.",
                code="server:forbidden",
                description="Access is denied.",
            )

    def authenticate(self) -> tuple[str, str | None]:
        header = self.headers.get("Authorization") or ""
        denied = ApiError(
            401,
            message=AUTH_DENIED,
            code="server:unauthorized",
            description=AUTH_DENIED,
            headers={"WWW-Authenticate": 'Basic realm="api"'},
        )
        if not header.lower().startswith("basic "):
            raise denied
        try:
            username, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise denied from None
        known = self.app.users().get(username)
        if known is None or known[0] != password:
            raise denied
        return username, known[1]

    def log_call(
        self,
        method: str,
        path: str,
        tier: str,
        status: int,
        user: str | None,
        note: dict[str, Any] | None,
        db: Any = None,
    ) -> None:
        note = note or {}
        store = self.app.store
        values = (
            store.now(),
            method,
            path,
            tier,
            status,
            user,
            note.get("import_id"),
            note.get("import_kind"),
            note.get("records"),
            json.dumps(
                {k: v for k, v in note.items() if k not in ("import_id", "import_kind", "records")}
            )
            or None,
        )
        sql = (
            "INSERT INTO calls (ts, method, path, tier, status, api_user, import_id, "
            "import_kind, records, note) VALUES (?,?,?,?,?,?,?,?,?,?)"
        )
        if db is not None:
            with store.write(db):
                db.execute(sql, values)
            return
        with store.connect() as fresh, store.write(fresh):
            fresh.execute(sql, values)


def too_many(headers: dict[str, str]) -> ApiError:
    return ApiError(
        429,
        code="server:tooManyRequests",
        description="Too Many Requests",
        message="Too Many Requests",
        headers=headers,
    )


def server_error(status: int) -> ApiError:
    if status == 503:
        text = "The service is temporarily unavailable. ERROR_SYSTEM_SERVICETEMPORARILYUNAVAILABLE"
        return ApiError(503, message=text, code="server:serviceUnavailable", description=text)
    return ApiError(
        status,
        message="An error has occurred. ERROR_UNKNOWN",
        code="server:internalError",
        description="An internal error occurred",
    )


def too_large(family: str, limit: int) -> ApiError:
    text = f"The request body exceeds the maximum size of {limit // (1024 * 1024)} MB"
    service = {"v3c": "contacts", "v3i": "insightData"}.get(family, "server")
    return ApiError(
        413,
        message=f"{text}. ERROR_REQUEST_TOO_LARGE",
        code=f"{service}:requestTooLarge",
        description=text,
    )


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many workers may connect at once; the default backlog of 5 would drop SYNs.
    request_queue_size = 128


def make_server(app: App) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (SandboxHandler,), {"app": app})
    server = Server((app.host, app.port), handler)
    app.port = server.server_address[1]
    return server
