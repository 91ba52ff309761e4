"""A fake Mintsoft API on 127.0.0.1 (a free port), serving recorded payloads.

It checks the `ms-apikey` header (never the URL), issues 24-hour keys at `POST /api/Auth`, pages
`/api/Order/List` by `PageNo`/`Limit` and filters it by `SinceLastUpdated`, and serves returns by
date, return reasons, order statuses and the products-in-location report. `script` queues
answers for the next requests to a path (a 429, a 500, a 401), and `received` records each
request.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads" / "mintsoft"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeMintsoft:
    username: str = "api-user"
    password: str = "s3cret"
    static_key: str = "static-key-never-expires"
    orders: list[dict[str, Any]] = field(default_factory=list)
    returns_by_date: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stock: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # warehouse id or ""
    received: list[Received] = field(default_factory=list)
    #: path → answers (status, body, headers) for the next requests to it
    script: dict[str, list[tuple[int, Any, dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    keys: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.keys.add(self.static_key)
        self.statuses = load("order-statuses.json")
        self.reasons = load("return-reasons.json")

    def expire_session_keys(self) -> None:
        """Mintsoft's 24 hours are up: every key but the static one stops working."""
        self.keys = {self.static_key}

    def requests_to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    # -- serving ---------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        self.received.append(Received(method, path, query, headers, body))
        if self.script.get(path):
            return self.script[path].pop(0)
        if method == "POST" and path == "/api/Auth":
            creds = json.loads(body or b"{}")
            if creds.get("Username") != self.username or creds.get("Password") != self.password:
                return 401, {"Message": "Authorization has been denied for this request."}, {}
            key = secrets.token_hex(16)
            self.keys.add(key)
            return 200, key, {}
        if "apikey" in {k.lower() for k in query}:
            return 401, {"Message": "API key in the URL is no longer accepted."}, {}
        if headers.get("ms-apikey") not in self.keys:
            return 401, {"Message": "Authorization has been denied for this request."}, {}
        if path == "/api/Order/List":
            return 200, self._order_list(query), {}
        if path == "/api/Order/Statuses":
            return 200, self.statuses, {}
        if path == "/api/Return/Reasons":
            return 200, self.reasons, {}
        if path == "/api/Return/SearchByDate":
            return 200, self.returns_by_date.get(query.get("Date", "")[:10], []), {}
        if path.startswith("/api/Return/") and path.endswith("/Items"):
            return_id = int(path.split("/")[3])
            for day in self.returns_by_date.values():
                for ret in day:
                    if ret.get("ID") == return_id:
                        return 200, ret.get("_items", []), {}
            return 404, {"Message": "No return"}, {}
        if path == "/api/Reports/ProductsInLocationReport":
            return 200, self.stock.get(query.get("warehouseId", ""), []), {}
        return 404, {"Message": f"No route {path}"}, {}

    def _order_list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        rows = self.orders
        since = query.get("SinceLastUpdated")
        if since:
            floor = datetime.fromisoformat(since)
            rows = [o for o in rows if datetime.fromisoformat(str(o["LastUpdated"])[:26]) >= floor]
        if query.get("SortOldestFirst", "").lower() == "true":
            rows = sorted(rows, key=lambda o: str(o["LastUpdated"]))
        page, limit = int(query.get("PageNo", 1)), int(query.get("Limit", 100))
        page_rows = rows[(page - 1) * limit : page * limit]
        if query.get("IncludeOrderItems", "").lower() != "true":
            page_rows = [{**o, "OrderItems": None} for o in page_rows]
        return page_rows

    def start(self) -> FakeMintsoft:
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
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

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
