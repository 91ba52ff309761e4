"""A fake Patchworks trigger webhook on 127.0.0.1: records each request, answers as scripted.

By default it answers 200 with Patchworks' documented body (payloads/patchworks/
webhook-trigger-default-response.json); `script` queues other answers, one per request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_BODY = (
    Path(__file__).resolve().parent.parent
    / "payloads"
    / "patchworks"
    / "webhook-trigger-default-response.json"
).read_bytes()


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakePatchworks:
    received: list[Received] = field(default_factory=list)
    script: list[tuple[int, bytes]] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)

    def start(self) -> FakePatchworks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                fake.received.append(
                    Received("POST", parts.path, parse_qs(parts.query), dict(self.headers), body)
                )
                if fake.hang.is_set():
                    fake.hang.wait(0)  # answer nothing useful: close without a response
                    self.close_connection = True
                    return
                status, answer = fake.script.pop(0) if fake.script else (200, DEFAULT_BODY)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

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
