"""A fake Stokly API on 127.0.0.1, as far as the public client code shows it (sources.md §6).

- ``POST /v1/grant`` checks ``signature = hex(HMAC-SHA256(secret, clientId))`` and answers
  ``{"data": {"authenticationResult": {"accessToken", "expiry"}}}``;
- every other call needs ``Authorization: Bearer <a live token>``; `expire_tokens()` makes the
  issued ones answer ``401 {"message": "jwt expired"}``;
- lists page by ``page`` (0-based) and ``size``, sort by ``sortField``/``sortDirection`` and
  filter with the DSL subset the adapter uses (``[f]>={v}``, ``[f]=={v}``, ``[f]!={v}``, ``&&``,
  ``{@string;v}``, ``{@null;}``), answering ``{"data": [...], "metadata": {"count": n}}``;
- money is served as JSON numbers, the way Stokly does;
- `faults` queues answers (status, body, headers) for the next calls whose path starts with a prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLAUSE = re.compile(r"^\[(?P<field>[^\]]+)\](?P<op>>=|==|!=)\{(?P<value>.*)\}$")


def _literal(value: str) -> Any:
    if value.startswith("@null;"):
        return None
    if value.startswith("@string;"):
        return value[len("@string;") :]
    return value


def _matches(row: dict[str, Any], clause: str) -> bool:
    match = CLAUSE.match(clause.strip())
    if not match:
        raise ValueError(f"unparsed filter clause {clause!r}")
    value = _literal(match["value"])
    actual = row.get(match["field"])
    if match["op"] == "==":
        return actual == value
    if match["op"] == "!=":
        return actual != value
    return actual is not None and str(actual) >= str(value)


@dataclass
class FakeStokly:
    clock: Callable[[], float]
    account_key: str = "acme"
    client_id: str = "client-1"
    secret: str = "shh"
    token_ttl: float = 3600.0
    saleorders: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    customers: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    listings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    inventory: list[dict[str, Any]] = field(default_factory=list)
    faults: list[tuple[str, int, str, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    tokens: dict[str, bool] = field(default_factory=dict)  # token → still valid
    grants: int = 0

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = False

    def calls(self, prefix: str) -> list[tuple[str, str, dict[str, list[str]]]]:
        return [r for r in self.requests if r[1].startswith(prefix)]

    def _collection(self, path: str) -> list[dict[str, Any]] | None:
        if path == "/v2/saleorders":
            return self.saleorders
        if m := re.fullmatch(r"/v2/saleorders/([^/]+)/items", path):
            return self.items.get(m[1], [])
        if path == "/v0/customers":
            return self.customers
        if path == "/v0/invoices":
            return self.invoices
        if m := re.fullmatch(r"/v0/channels/([^/]+)/listings", path):
            return self.listings.get(m[1])
        if path == "/v1/inventory-records":
            return self.inventory
        if path == "/v0/items":
            return [{"itemId": "i1"}]
        return None

    def handle(
        self, method: str, raw_path: str, headers: Any, body: bytes
    ) -> tuple[int, str, dict[str, str]]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        self.requests.append((method, parts.path, query))
        for index, (prefix, status, text, extra) in enumerate(self.faults):
            if parts.path.startswith(prefix):
                del self.faults[index]
                return status, text, extra
        if method == "POST" and parts.path == "/v1/grant":
            document = json.loads(body)
            expected = hmac.new(
                self.secret.encode(), self.client_id.encode(), hashlib.sha256
            ).hexdigest()
            if (
                document.get("accountkey") != self.account_key
                or document.get("clientId") != self.client_id
                or not hmac.compare_digest(str(document.get("signature")), expected)
            ):
                return 401, json.dumps({"message": "Invalid signature"}), {}
            self.grants += 1
            token = secrets.token_hex(8)
            self.tokens[token] = True
            expiry = datetime.fromtimestamp(self.clock() + self.token_ttl, UTC).isoformat()
            granted = {"data": {"authenticationResult": {"accessToken": token, "expiry": expiry}}}
            return 200, json.dumps(granted), {}
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if not self.tokens.get(token):
            message = "jwt expired" if token in self.tokens else "Invalid admin session"
            return 401, json.dumps({"message": message}), {}
        rows = self._collection(parts.path)
        if rows is None:
            return 404, json.dumps({"message": "Not found"}), {}
        selected = list(rows)
        for clause in (query.get("filter", [""])[0]).split("&&"):
            if clause.strip():
                selected = [r for r in selected if _matches(r, clause)]
        sort = query.get("sortField", [""])[0]
        if sort:
            selected.sort(
                key=lambda r: str(r.get(sort) or ""), reverse=query.get("sortDirection") == ["DESC"]
            )
        page = int(query.get("page", ["0"])[0])
        size = int(query.get("size", ["100"])[0])
        answer: dict[str, Any] = {
            "data": selected[page * size : (page + 1) * size],
            "metadata": {"count": len(selected)},
        }
        return 200, json.dumps(answer), {}

    def start(self) -> FakeStokly:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, text, extra = fake.handle(method, self.path, self.headers, body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
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
