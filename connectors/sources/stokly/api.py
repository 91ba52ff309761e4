"""The Stokly HTTP API: the signed grant for an access token (renewed before it expires), the
filter DSL and paging, within the connection's share of the rate budget (README.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests

from connectors.budget import Lane, RateBudget, TierLimit
from connectors.models import Connection
from connectors.sources.base import SourceError
from connectors.sources.stokly.mapping import (
    DEFAULTS,
    EXPIRED_MESSAGES,
    REFRESH_MARGIN,
    TIMEOUT,
    parse_time,
)
from connectors.sources.values import (
    decimal,
)


class RateLimited(SourceError):
    """The source or our shared budget says wait `retry_after` seconds (transient)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, permanent=False)
        self.retry_after = retry_after


def filter_literal(value: str) -> str:
    """A filter literal; strings with the DSL's special characters go typed (`{@string;…}`)."""
    return "{@string;" + value + "}" if any(c in value for c in "{}[];&|=") else "{" + value + "}"


def filter_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


# -- the HTTP side ---------------------------------------------------------------------------

_TOKENS: dict[tuple[int | None, str], tuple[str, float]] = {}


class StoklyAPI:
    """Authenticated calls to one Stokly account: token grant and refresh, the shared rate budget,
    errors classified for the engine (`SourceError.permanent`)."""

    def __init__(
        self,
        connection: Connection,
        session: requests.Session | None = None,
        clock: Any = time.time,
    ) -> None:
        self.connection = connection
        self.options = {**DEFAULTS, **(connection.options or {})}
        self.credentials: dict[str, Any] = dict(connection.credentials or {})
        self.base = str(self.options["base_url"]).rstrip("/")
        self.session = session or requests.Session()
        self.clock = clock
        account = str(self.credentials.get("account_key") or connection.pk)
        self.budget = RateBudget(
            f"stokly:{account}",
            {"api": TierLimit(int(self.options["requests_per_minute"]), 60.0)},
            clock=clock,
        )
        self._key = (connection.pk, str(self.credentials.get("client_id") or ""))

    def __enter__(self) -> StoklyAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    # tokens
    @property
    def can_grant(self) -> bool:
        return all(self.credentials.get(k) for k in ("account_key", "client_id", "secret"))

    def _grant(self) -> str:
        client_id = str(self.credentials["client_id"])
        signature = hmac.new(
            str(self.credentials["secret"]).encode(), client_id.encode(), hashlib.sha256
        ).hexdigest()
        body = {
            "accountkey": str(self.credentials["account_key"]),
            "clientId": client_id,
            "signature": signature,
        }
        response = self._send("POST", "/v1/grant", json_body=body, auth=False)
        if response.status_code in (400, 401, 403):
            raise SourceError(
                f"Stokly refused the grant for client {client_id} ({response.status_code}): "
                "check the account key, client id and secret.",
                permanent=True,
            )
        self._raise_for_status(response, "/v1/grant")
        result = (self._json(response, "/v1/grant").get("data") or {}).get(
            "authenticationResult"
        ) or {}
        token = str(result.get("accessToken") or "")
        expiry = parse_time(result.get("expiry"))
        if not token:
            raise SourceError("Stokly's grant answered without an access token.")
        expires_at = expiry.timestamp() if expiry else self.clock() + 3600
        _TOKENS[self._key] = (token, expires_at)
        return token

    def token(self) -> str:
        if not self.can_grant:
            pasted = str(self.credentials.get("access_token") or "")
            if not pasted:
                raise SourceError(
                    "No Stokly credentials: set account_key, client_id and secret (or an access_token).",
                    permanent=True,
                )
            return pasted
        cached = _TOKENS.get(self._key)
        if cached and cached[1] - REFRESH_MARGIN > self.clock():
            return cached[0]
        return self._grant()

    # calls
    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        auth: bool = True,
    ) -> requests.Response:
        grant = self.budget.acquire("api", Lane.BULK)
        if not grant:
            raise RateLimited(
                f"Stokly rate budget spent: next call in {grant.wait:.0f} s.", grant.wait
            )
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            return self.session.request(
                method,
                self.base + path,
                params=params,
                json=json_body,
                headers=headers,
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise SourceError(f"Stokly {path}: {type(exc).__name__}") from exc

    def _json(self, response: requests.Response, path: str) -> dict[str, Any]:
        try:
            document = json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise SourceError(
                f"Stokly {path} answered {response.status_code} with no JSON"
            ) from exc
        if not isinstance(document, dict):
            raise SourceError(f"Stokly {path} answered a JSON {type(document).__name__}")
        return document

    def _raise_for_status(self, response: requests.Response, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 429:
            retry = decimal(response.headers.get("Retry-After")) or Decimal(60)
            self.budget.block("api", float(retry))
            raise RateLimited(f"Stokly {path}: 429, retry in {retry} s.", float(retry))
        text = response.text[:200]
        raise SourceError(
            f"Stokly {path} answered {status}: {text}",
            permanent=400 <= status < 500 and status != 408,
        )

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self._send("GET", path, params=params)
        if response.status_code == 401:
            message = response.text.lower()
            if self.can_grant:
                _TOKENS.pop(self._key, None)  # expired or revoked: one fresh grant, one retry
                response = self._send("GET", path, params=params)
            if response.status_code == 401:
                expired = any(m in message for m in EXPIRED_MESSAGES)
                raise SourceError(
                    "Stokly rejected the access token"
                    + (" (expired): paste a new one." if expired else "."),
                    permanent=True,
                )
        self._raise_for_status(response, path)
        return self._json(response, path)

    def list_page(
        self,
        path: str,
        page: int,
        size: int,
        *,
        sort: str | None = None,
        filters: Iterable[str] = (),
    ) -> tuple[list[dict[str, Any]], int | None]:
        params: dict[str, Any] = {"page": page, "size": size}
        if sort:
            params.update(sortField=sort, sortDirection="ASC")
        joined = "&&".join(f for f in filters if f)
        if joined:
            params["filter"] = joined  # requests percent-encodes `&&` as %26%26
        document = self.get(path, params)
        rows = document.get("data")
        if not isinstance(rows, list):
            raise SourceError(f"Stokly {path}: no data list in the answer")
        count = (document.get("metadata") or {}).get("count")
        return [r for r in rows if isinstance(r, dict)], int(count) if count is not None else None
