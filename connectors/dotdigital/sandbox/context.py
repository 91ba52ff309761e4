"""What a handler receives (one API call) and returns."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ApiError, detail

if TYPE_CHECKING:
    from .server import App


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass
class Ctx:
    app: App
    db: sqlite3.Connection
    method: str
    path: str
    query: dict[str, list[str]]
    raw_body: bytes
    family: str
    api_user: str | None = None
    # Filled in by import handlers so the call log can name the import.
    note: dict[str, Any] = field(default_factory=dict)
    rate_headers: dict[str, str] = field(default_factory=dict)

    @property
    def now(self) -> float:
        return self.app.store.now()

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def q_int(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.q(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.bad_param(name, raw) from None
        if not low <= value <= high:
            raise self.bad_param(name, raw)
        return value

    def bad_param(self, name: str, raw: str) -> ApiError:
        if self.family == "v2":
            return ApiError(
                400, message=f"The value '{raw}' is not valid for {name}. ERROR_PARAMETER_INVALID"
            )
        return ApiError(
            400,
            code=f"{self.service}:invalidParameter",
            description=f"The value '{raw}' is invalid for '{name}'",
            details=[detail(name, "Invalid value")],
        )

    @property
    def service(self) -> str:
        return {"v3c": "contacts", "v3i": "insightData"}.get(self.family, "server")

    def json(self) -> Any:
        """The parsed body; malformed JSON answers DotDigital's bad-request error."""
        text = self.raw_body.decode("utf-8-sig", errors="replace").strip()
        if not text:
            if self.family == "v2":
                raise ApiError(400, message="The request body is empty. ERROR_MALFORMED_REQUEST")
            raise ApiError(
                400,
                code="server:badRequest",
                description="Bad request",
                details=[detail("body", "A request body is required")],
            )
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if self.family == "v2":
                raise ApiError(
                    400,
                    message="The request body could not be parsed as JSON. ERROR_MALFORMED_REQUEST",
                ) from None
            raise ApiError(
                400,
                code="server:badRequest",
                description="Bad request",
                details=[detail(f"line {exc.lineno}, position {exc.colno}", exc.msg)],
            ) from None

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            if self.family == "v2":
                raise ApiError(
                    400, message="The request body must be a JSON object. ERROR_MALFORMED_REQUEST"
                )
            raise ApiError(
                400,
                code="server:badRequest",
                description="Bad request",
                details=[detail("body", "Expected a JSON object")],
            )
        return body
