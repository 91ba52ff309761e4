"""A fake OrderWise API on 127.0.0.1 (sources.md §7): ``GET /OWAPI/token/gettoken`` with Basic
credentials answers a raw token string; ``GET /OWAPI/ExportDefinition/{id}`` runs an "export
definition" (here: a list of rows) with keyset paging by ``limit`` + ``last_id`` and, when
`honours_since` is set, the ``since`` window (server local time, compared as text).

`ignores_paging` answers every row at once (a definition that ignores the parameters);
`expire_tokens()` makes issued tokens answer 401; `faults` queues answers for matching paths.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeOrderwise:
    username: str = "api-user"
    password: str = "pa:ss"
    definitions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    honours_since: bool = True
    ignores_paging: bool = False
    faults: list[tuple[str, int, str, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    tokens: dict[str, bool] = field(default_factory=dict)

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = False

    def calls(self, prefix: str) -> list[tuple[str, dict[str, list[str]], dict[str, str]]]:
        return [r for r in self.requests if r[0].startswith(prefix)]

    def _basic_ok(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def handle(self, raw_path: str, headers: Any) -> tuple[int, str, dict[str, str]]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        self.requests.append((parts.path, query, dict(headers)))
        for index, (prefix, status, text, extra) in enumerate(self.faults):
            if parts.path.startswith(prefix):
                del self.faults[index]
                return status, text, extra
        auth = headers.get("Authorization", "")
        if parts.path == "/OWAPI/token/gettoken":
            if not self._basic_ok(auth):
                return 401, '"Unauthorised"', {}
            token = secrets.token_hex(8)
            self.tokens[token] = True
            return 200, token, {"Content-Type": "text/plain"}
        if not (self._basic_ok(auth) or self.tokens.get(auth.removeprefix("Bearer "))):
            return 401, '{"Message": "Authorization has been denied for this request."}', {}
        match = re.fullmatch(r"/OWAPI/ExportDefinition/(\w+)", parts.path)
        if not match:
            return 404, '{"Message": "No such export definition"}', {}
        rows = sorted(self.definitions.get(match[1], []), key=lambda r: int(r["row_id"]))
        if self.ignores_paging:
            return 200, json.dumps(rows), {}
        since = query.get("since", [""])[0]
        if since and self.honours_since:
            since = since.replace("T", " ")  # as SQL Server compares datetimes, not text
            rows = [r for r in rows if str(r.get("amended") or "").replace("T", " ") >= since]
        last_id = int(query.get("last_id", ["0"])[0])
        limit = int(query.get("limit", ["1000"])[0])
        page = [r for r in rows if int(r["row_id"]) > last_id][:limit]
        return 200, json.dumps({"data": page}), {}

    def start(self) -> FakeOrderwise:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, text, extra = fake.handle(self.path, self.headers)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/OWAPI"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
