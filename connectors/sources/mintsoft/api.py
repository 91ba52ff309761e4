"""Mintsoft's HTTP API: the `ms-apikey` header, the 24-hour key from `POST /api/Auth`, errors.

Credentials (encrypted on the connection): either `api_key` (a key an admin set to never expire)
or `username` + `password`, exchanged at `POST /api/Auth` for a key valid 24 hours; that key is
kept in the credentials (`session_key`, `session_key_at`) and renewed before it expires or when
Mintsoft answers 401. Since 1 May 2024 Mintsoft refuses the key in the URL: header only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from connectors.models import Connection
from connectors.sources.base import SourceError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.mintsoft.co.uk"
KEY_LIFETIME = 24 * 3600.0
KEY_RENEW_MARGIN = 3600.0  # renew an hour before Mintsoft's 24 h
TIMEOUT = (5.0, 60.0)  # connect, read: the stock report of a large warehouse is slow


class MintsoftError(SourceError):
    """A Mintsoft call failed; `retry_after` (seconds) when Mintsoft said how long to wait."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent)
        self.status = status
        self.retry_after = retry_after


class MintsoftApi:
    def __init__(
        self,
        connection: Connection,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.base_url = str(connection.options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.session = session or requests.Session()
        self.clock = clock

    # -- the key ----------------------------------------------------------------------------

    @property
    def _credentials(self) -> Mapping[str, Any]:
        return self.connection.credentials or {}

    def _can_log_in(self) -> bool:
        return bool(self._credentials.get("username") and self._credentials.get("password"))

    def _key(self) -> str:
        creds = self._credentials
        if creds.get("api_key"):
            return str(creds["api_key"])
        if not self._can_log_in():
            raise MintsoftError(
                "No Mintsoft credentials: set an API key, or a username and password.",
                permanent=True,
            )
        at = float(creds.get("session_key_at") or 0)
        if creds.get("session_key") and self.clock() - at < KEY_LIFETIME - KEY_RENEW_MARGIN:
            return str(creds["session_key"])
        return self._log_in()

    def _log_in(self) -> str:
        creds = self._credentials
        try:
            response = self.session.post(
                f"{self.base_url}/api/Auth",
                json={"Username": creds.get("username"), "Password": creds.get("password")},
                headers={"Accept": "application/json"},
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise MintsoftError(f"Mintsoft did not answer the log-in: {exc}") from exc
        if response.status_code in (400, 401, 403):
            raise MintsoftError(
                f"Mintsoft refused the username and password ({response.status_code}).",
                permanent=True,
                status=response.status_code,
            )
        self._raise_for(response, "POST /api/Auth")
        try:
            key = response.json()
        except ValueError:
            key = response.text
        if isinstance(key, Mapping):  # some accounts answer {"ApiKey": "..."}
            key = key.get("ApiKey") or key.get("Key") or ""
        key = str(key).strip().strip('"')
        if not key:
            raise MintsoftError("Mintsoft's log-in answer held no API key.", status=200)
        self.connection.credentials = {
            **dict(creds),
            "session_key": key,
            "session_key_at": self.clock(),
        }
        if self.connection.pk:
            self.connection.save(update_fields=["credentials"])
        return key

    # -- calls ------------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a JSON resource; a 401 renews a session key once before giving up."""
        for attempt in (1, 2):
            key = self._key()
            try:
                response = self.session.get(
                    f"{self.base_url}{path}",
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    headers={"ms-apikey": key, "Accept": "application/json"},
                    timeout=TIMEOUT,
                )
            except requests.Timeout as exc:
                raise MintsoftError(f"GET {path}: no answer in time") from exc
            except requests.RequestException as exc:
                raise MintsoftError(f"GET {path}: {exc}") from exc
            if (
                response.status_code == 401
                and attempt == 1
                and not self._credentials.get("api_key")
            ) and self._can_log_in():
                log.info(
                    "Mintsoft key of connection %s refused: logging in again",
                    self.connection.pk,
                )
                self._log_in()
                continue
            self._raise_for(response, f"GET {path}")
            try:
                return response.json()
            except ValueError as exc:
                raise MintsoftError(f"GET {path}: the answer is not JSON", status=200) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for(self, response: requests.Response, label: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 401:
            raise MintsoftError(
                f"{label}: Mintsoft refused the API key (401). An expired 24-hour key needs the "
                "username and password, or an admin-set key that never expires.",
                permanent=True,
                status=status,
            )
        if status == 429:
            retry_after = _seconds(response.headers.get("Retry-After")) or 60.0
            raise MintsoftError(
                f"{label}: Mintsoft is rate limiting (429); retry in {retry_after:g}s",
                status=status,
                retry_after=retry_after,
            )
        if status >= 500:
            raise MintsoftError(f"{label}: Mintsoft answered {status}", status=status)
        raise MintsoftError(
            f"{label}: Mintsoft answered {status}: {response.text[:200]}",
            permanent=True,
            status=status,
        )


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
