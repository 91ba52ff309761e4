"""The OrderWise HTTP API: Basic or token authentication, keyset paging of an export definition,
within the connection's share of the rate budget (README.md)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import requests

from connectors.budget import Lane, RateBudget, TierLimit
from connectors.models import Connection
from connectors.sources.base import (
    SourceError,
)
from connectors.sources.orderwise.mapping import DEFAULTS
from connectors.sources.values import (
    decimal,
)

TIMEOUT = (5.0, 120.0)  # a self-hosted SQL export can be slow


class RateLimited(SourceError):
    """The source or our shared budget says wait `retry_after` seconds (transient)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, permanent=False)
        self.retry_after = retry_after


# -- the HTTP side ---------------------------------------------------------------------------

_TOKENS: dict[int | None, str] = {}


class OrderwiseAPI:
    def __init__(
        self,
        connection: Connection,
        session: requests.Session | None = None,
        clock: Any = time.time,
    ) -> None:
        self.connection = connection
        self.options = {**DEFAULTS, **(connection.options or {})}
        self.credentials: dict[str, Any] = dict(connection.credentials or {})
        self.base = str(self.options.get("base_url") or "").rstrip("/")
        if not self.base:
            raise SourceError("Set the OrderWise base URL (options: base_url).", permanent=True)
        self.session = session or requests.Session()
        self.clock = clock
        self.budget = RateBudget(
            f"orderwise:{connection.pk}",
            {"api": TierLimit(int(self.options["requests_per_minute"]), 60.0)},
            clock=clock,
        )

    def __enter__(self) -> OrderwiseAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _basic(self) -> str:
        user = str(self.credentials.get("username") or "")
        password = str(self.credentials.get("password") or "")
        if not user:
            raise SourceError("No OrderWise API user: set username and password.", permanent=True)
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _authorization(self, fresh: bool = False) -> str:
        if self.options["auth"] == "basic":
            return self._basic()
        token = None if fresh else _TOKENS.get(self.connection.pk)
        if token is None:
            response = self._send(
                "GET", "/token/gettoken", headers={"Authorization": self._basic()}
            )
            if response.status_code in (401, 403):
                raise SourceError("OrderWise refused the API user's credentials.", permanent=True)
            self._raise_for_status(response, "/token/gettoken")
            token = response.text.strip().strip('"')
            if not token:
                raise SourceError("OrderWise answered an empty token.")
            _TOKENS[self.connection.pk] = token
        return f"Bearer {token}"

    def _send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None) -> requests.Response:  # fmt: skip
        grant = self.budget.acquire("api", Lane.BULK)
        if not grant:
            raise RateLimited(
                f"OrderWise rate budget spent: next call in {grant.wait:.0f} s.", grant.wait
            )
        try:
            return self.session.request(
                method,
                self.base + path,
                params=params,
                headers=dict(headers or {}),
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise SourceError(f"OrderWise {path}: {type(exc).__name__}") from exc

    def _raise_for_status(self, response: requests.Response, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 429 or status == 503 and response.headers.get("Retry-After"):
            retry = decimal(response.headers.get("Retry-After")) or Decimal(60)
            self.budget.block("api", float(retry))
            raise RateLimited(f"OrderWise {path}: {status}, retry in {retry} s.", float(retry))
        raise SourceError(
            f"OrderWise {path} answered {status}: {response.text[:200]}",
            permanent=400 <= status < 500 and status != 408,
        )

    def get(self, path: str, params: Mapping[str, Any]) -> Any:
        headers = {"Accept": "application/json", "Authorization": self._authorization()}
        response = self._send("GET", path, params=params, headers=headers)
        if response.status_code == 401 and self.options["auth"] != "basic":
            _TOKENS.pop(self.connection.pk, None)  # the token expired: one fresh token, one retry
            headers["Authorization"] = self._authorization(fresh=True)
            response = self._send("GET", path, params=params, headers=headers)
        if response.status_code == 401:
            raise SourceError("OrderWise rejected the API user.", permanent=True)
        self._raise_for_status(response, path)
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise SourceError(
                f"OrderWise {path} answered {response.status_code} with no JSON"
            ) from exc


def export_rows(document: Any) -> list[dict[str, Any]]:
    """An export's rows: a JSON list, or the one list inside an object (``data``, ``rows``…)."""
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list)]
        document = lists[0] if len(lists) == 1 else None
    if not isinstance(document, list):
        raise SourceError("OrderWise export answered no list of rows.")
    return [r for r in document if isinstance(r, dict)]


def row_id_of(row: Mapping[str, Any]) -> int | None:
    try:
        return int(str(row.get("row_id")).strip())
    except ValueError:
        return None
