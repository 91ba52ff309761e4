"""A fake Brightpearl public API on 127.0.0.1 (a free port), serving recorded payloads.

It answers `/public-api/{account}/…` for orders, goods-out notes, products, availability,
contacts, order search and order statuses by ID set, checks the private-app headers or an OAuth
bearer token (an expired token answers the recorded 401 body), refreshes tokens at
`POST /token/{account}`, counts requests in a 60-second window of 200 and sends
`Brightpearl-Requests-Remaining` / `Brightpearl-Next-Throttle-Period` on every answer, answering
the recorded 503 body past the cap. `script` queues answers for the next requests to a path.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads" / "brightpearl"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def expand(id_set: str) -> list[int]:
    ids: list[int] = []
    for part in id_set.split(","):
        low, _, high = part.partition("-")
        ids += range(int(low), int(high or low) + 1)
    return ids


def _time(value: str) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value and value != "/" else None


SEARCH_COLUMNS = load("order-search-response.json")["response"]["metaData"]["columns"]
TYPE_IDS = {"SO": 1, "PO": 2, "SC": 3, "PC": 4}


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeBrightpearl:
    account: str = "acme"
    app_ref: str = "syncdesk"
    account_token: str = "private-token"
    access_token: str = ""
    refresh_token: str = "refresh-1"
    cap: int = 200
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    availability: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, Any, dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    expired_tokens: set[str] = field(default_factory=set)
    refusing_refresh: bool = False
    window: list[float] = field(default_factory=list)

    def api_requests(self) -> list[Received]:
        return [r for r in self.received if r.path.startswith("/public-api/")]

    # -- serving ---------------------------------------------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        now = time.monotonic()
        self.window = [t for t in self.window if now - t < 60]
        remaining = max(0, self.cap - len(self.window))
        next_ms = int((60 - (now - self.window[0])) * 1000) if self.window else 60000
        return {
            "Brightpearl-Requests-Remaining": str(max(0, remaining)),
            "Brightpearl-Next-Throttle-Period": str(next_ms),
        }

    def answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        self.received.append(Received(method, path, query, headers, body))
        if method == "POST" and path == f"/token/{self.account}":
            return self._refresh(body)
        prefix = f"/public-api/{self.account}"
        if not path.startswith(prefix):
            return 404, {"response": "No such account"}, {}
        over = self._rate_headers()  # forgets requests older than the window
        if len(self.window) >= self.cap:
            return 503, load("error-503-request-cap.json"), over
        self.window.append(time.monotonic())
        rate = self._rate_headers()
        if self.script.get(path):
            status, answer, extra = self.script[path].pop(0)
            return status, answer, {**rate, **extra}
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
            if token in self.expired_tokens:
                return 401, load("error-401-token-expired.json"), rate
            if token != self.access_token:
                return 401, {"response": "Not authorised"}, rate
        elif (
            headers.get("brightpearl-app-ref") != self.app_ref
            or headers.get("brightpearl-account-token") != self.account_token
        ):
            return 401, {"response": "Not authorised"}, rate
        status, answer = self._resource(method, path[len(prefix) :], query, body)
        return status, answer, rate

    def _refresh(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if self.refusing_refresh or form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant", "error_description": "Refresh token revoked"}, {}
        recorded = load("extra/oauth-refresh-token-response.json")
        self.expired_tokens.add(self.access_token)
        self.access_token = f"{recorded['access_token']}-{len(self.expired_tokens)}"
        self.refresh_token = f"{recorded['refresh_token']}-{len(self.expired_tokens)}"
        return (
            200,
            {**recorded, "access_token": self.access_token, "refresh_token": self.refresh_token},
            {},
        )

    def _by_ids(self, store: dict[int, dict[str, Any]], id_set: str) -> list[dict[str, Any]]:
        return [store[i] for i in expand(unquote(id_set)) if i in store]

    def _resource(
        self, method: str, path: str, query: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method == "PATCH" and parts[:2] == ["contact-service", "contact"]:
            contact = self.contacts.get(int(parts[2]))
            if contact is None:
                return 404, load("extra/error-404-contact-not-found.json")
            for op in json.loads(body):
                if op["path"] == "/marketingDetails/isReceiveEmailNewsletter":
                    contact.setdefault("marketingDetails", {})["isReceiveEmailNewsletter"] = op[
                        "value"
                    ]
            return 200, {"response": []}
        if parts[:2] == ["order-service", "order"]:
            return 200, {"response": self._by_ids(self.orders, parts[2])}
        if parts[:2] == ["order-service", "order-status"]:
            return 200, {"response": self.statuses}
        if parts[:2] == ["order-service", "order-search"]:
            return self._search(query)
        if parts[:3] == ["warehouse-service", "order", "*"]:
            notes = {i: self.notes[i] for i in expand(unquote(parts[5])) if i in self.notes}
            return (
                (200, {"response": {str(k): v for k, v in notes.items()}})
                if notes
                else (
                    404,
                    {"errors": [{"code": "WHSC-404", "message": "No goods-out notes found"}]},
                )
            )
        if parts[:2] == ["warehouse-service", "product-availability"]:
            ids = expand(unquote(parts[2]))
            return 200, {
                "response": {str(i): self.availability[i] for i in ids if i in self.availability}
            }
        if parts[:2] == ["product-service", "product"]:
            return 200, {"response": self._by_ids(self.products, parts[2])}
        if parts[:2] == ["contact-service", "contact-search"]:
            email = query.get("primaryEmail", "")
            rows = [
                [
                    cid,
                    c["communication"]["emails"]["PRI"]["email"],
                    c.get("firstName"),
                    c.get("lastName"),
                ]
                for cid, c in sorted(self.contacts.items())
                if c["communication"]["emails"]["PRI"]["email"] == email
            ]
            columns = load("synthetic/contact-search-by-email.json")["response"]["metaData"][
                "columns"
            ]
            return 200, {
                "response": {
                    "results": rows,
                    "metaData": {
                        "morePagesAvailable": False,
                        "resultsReturned": len(rows),
                        "columns": columns,
                    },
                }
            }
        if parts[:2] == ["contact-service", "contact"]:
            found = self._by_ids(self.contacts, parts[2])
            return (
                (200, {"response": found})
                if found
                else (404, load("extra/error-404-contact-not-found.json"))
            )
        return 404, {"errors": [{"code": "CMNC-404", "message": f"No route {path}"}]}

    def _search(self, query: dict[str, str]) -> tuple[int, Any]:
        """Order search, shaped like the recorded one: rows of columns, metaData paging."""
        rows = sorted(self.orders.values(), key=lambda o: o["id"])
        for name, field_name in (("updatedOn", "updatedOn"), ("createdOn", "createdOn")):
            if name in query:
                low, _, high = (_time(v) for v in query[name].partition("/"))
                rows = [
                    o
                    for o in rows
                    if (low is None or _time(o[field_name]) >= low)  # type: ignore[operator]
                    and (high is None or _time(o[field_name]) < high)  # type: ignore[operator]
                ]
        first, size = int(query.get("firstResult", 1)), int(query.get("pageSize", 200))
        page = rows[first - 1 : first - 1 + size]
        names = [c["name"] for c in SEARCH_COLUMNS]
        results = []
        for order in page:
            row: list[Any] = [None] * len(names)
            row[names.index("orderId")] = order["id"]
            row[names.index("orderTypeId")] = TYPE_IDS[order["orderTypeCode"]]
            row[names.index("orderStatusId")] = order["orderStatus"]["orderStatusId"]
            results.append(row)
        return 200, {
            "response": {
                "results": results,
                "metaData": {
                    "morePagesAvailable": first - 1 + size < len(rows),
                    "resultsAvailable": len(rows),
                    "resultsReturned": len(results),
                    "firstResult": first,
                    "lastResult": first - 1 + len(results),
                    "columns": SEARCH_COLUMNS,
                },
            }
        }

    def start(self) -> FakeBrightpearl:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, answer, extra = fake.answer(
                    method, parts.path, query, {k.lower(): v for k, v in self.headers.items()}, body
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
