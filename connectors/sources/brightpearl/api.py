"""Brightpearl's HTTP API within the account's shared 200-requests-a-minute budget.

Auth (connection.credentials):
- private app: `app_ref` + `account_token` → headers `brightpearl-app-ref`,
  `brightpearl-account-token`;
- OAuth instance app: `access_token` (+ `refresh_token`, `app_ref`, optional `app_secret`,
  `dev_ref`) → `Authorization: Bearer …`, `brightpearl-app-ref`, `brightpearl-dev-ref`. A 401
  "Authorization token expired" is refreshed once at `https://oauth.brightpearl.com/token/{account}`
  and the new tokens are kept (encrypted) on the connection.

Every call first takes one request from `connectors.budget` (key `brightpearl:{account}`: every
worker of every machine shares it, as Brightpearl's private apps share one pool per account),
then feeds back `Brightpearl-Requests-Remaining` and `Brightpearl-Next-Throttle-Period` (ms). A 503
is Brightpearl's "over the cap": nobody calls again until the next period. The realtime lane (a
webhook's fetch) may use the whole minute; the bulk lane (poll, backfill) leaves a fifth of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from connectors.budget import Lane, RateBudget, TierLimit
from connectors.models import Connection
from connectors.sources.base import SourceError

log = logging.getLogger(__name__)

TIER = "api"
LIMIT = TierLimit(200, 60.0)
DEFAULT_OAUTH_URL = "https://oauth.brightpearl.com"
TIMEOUT = (5.0, 30.0)
THROTTLED_WAIT = 60.0  # when a 503 comes without a next-period header


class BrightpearlError(SourceError):
    """A Brightpearl call failed; `retry_after` (seconds) when the budget or Brightpearl said."""

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


def account_code(connection: Connection) -> str:
    code = (connection.options or {}).get("account_code")
    if not code:
        raise BrightpearlError("The connection has no Brightpearl account code.", permanent=True)
    return str(code)


def budget_for(connection: Connection, clock: Callable[[], float] = time.time) -> RateBudget:
    return RateBudget(f"brightpearl:{account_code(connection)}", {TIER: LIMIT}, clock=clock)


class BrightpearlApi:
    def __init__(
        self,
        connection: Connection,
        *,
        lane: Lane = Lane.BULK,
        session: requests.Session | None = None,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 2.0,
    ) -> None:
        self.connection = connection
        self.account = account_code(connection)
        self.lane = lane
        self.session = session or requests.Session()
        self.budget = budget or budget_for(connection)
        self.sleep = sleep
        self.max_wait = max_wait
        self.calls = 0

    @property
    def _credentials(self) -> Mapping[str, Any]:
        return self.connection.credentials or {}

    @property
    def base_url(self) -> str:
        options = self.connection.options or {}
        if options.get("base_url"):
            return str(options["base_url"]).rstrip("/")
        domain = self._credentials.get("api_domain") or options.get("api_domain")
        if not domain and options.get("datacentre"):
            domain = f"{options['datacentre']}.brightpearlconnect.com"
        if not domain:
            raise BrightpearlError(
                "The connection has no Brightpearl datacentre (e.g. euw1) or API domain.",
                permanent=True,
            )
        return f"https://{domain}/public-api/{self.account}"

    def _headers(self) -> dict[str, str]:
        creds = self._credentials
        headers = {"Accept": "application/json"}
        if creds.get("access_token"):
            headers["Authorization"] = f"Bearer {creds['access_token']}"
            if creds.get("app_ref"):
                headers["brightpearl-app-ref"] = str(creds["app_ref"])
            if creds.get("dev_ref"):
                headers["brightpearl-dev-ref"] = str(creds["dev_ref"])
        elif creds.get("app_ref") and creds.get("account_token"):
            headers["brightpearl-app-ref"] = str(creds["app_ref"])
            headers["brightpearl-account-token"] = str(creds["account_token"])
        else:
            raise BrightpearlError(
                "No Brightpearl credentials: a private app's reference and account token, "
                "or an OAuth access token.",
                permanent=True,
            )
        return headers

    # -- the budget ---------------------------------------------------------------------------

    def _take_budget(self, label: str) -> None:
        waited = 0.0
        while True:
            grant = self.budget.acquire(TIER, self.lane)
            if grant:
                return
            if waited + grant.wait > self.max_wait:
                raise BrightpearlError(
                    f"{label}: Brightpearl's 200-a-minute budget is spent; retry in {grant.wait:.1f}s",
                    retry_after=grant.wait,
                )
            self.sleep(grant.wait)
            waited += grant.wait

    # -- calls --------------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a resource; None when Brightpearl says there is no such record (404)."""
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        label = f"{method} {path}"
        refreshed = False
        while True:
            self._take_budget(label)
            try:
                response = self.session.request(
                    method,
                    f"{self.base_url}{path}",
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    json=json_body,
                    headers=self._headers(),
                    timeout=TIMEOUT,
                )
            except requests.Timeout as exc:
                raise BrightpearlError(f"{label}: no answer in time") from exc
            except requests.RequestException as exc:
                raise BrightpearlError(f"{label}: {exc}") from exc
            self.calls += 1
            self.budget.observe_headers(TIER, response.headers)
            if response.status_code == 401 and not refreshed and self._can_refresh():
                refreshed = True
                self.refresh_token()
                continue
            return self._answer(response, label)

    def _answer(self, response: requests.Response, label: str) -> Any:
        status = response.status_code
        body = _json(response)
        message = _message(body) or response.text[:200]
        if status < 400:
            return body
        if status == 503:
            next_ms = _number(response.headers.get("Brightpearl-Next-Throttle-Period"))
            wait = next_ms / 1000 if next_ms is not None else THROTTLED_WAIT
            self.budget.block(TIER, wait)
            raise BrightpearlError(
                f"{label}: over Brightpearl's request cap (503: {message}); retry in {wait:.1f}s",
                status=status,
                retry_after=wait,
            )
        if status == 401:
            raise BrightpearlError(
                f"{label}: Brightpearl refused the credentials (401: {message}).",
                permanent=True,
                status=status,
            )
        if status == 404:
            return None  # "no such record": an empty multi-result is a 404 too
        if status >= 500 and _is_request_fault(body):
            # Brightpearl answers a filter it cannot parse with a 500: our request, not its fault.
            raise BrightpearlError(f"{label}: {message}", permanent=True, status=status)
        if status >= 500:
            raise BrightpearlError(f"{label}: Brightpearl answered {status}", status=status)
        raise BrightpearlError(f"{label}: {status}: {message}", permanent=True, status=status)

    # -- OAuth --------------------------------------------------------------------------------

    def _can_refresh(self) -> bool:
        creds = self._credentials
        return bool(creds.get("access_token") and creds.get("refresh_token"))

    def refresh_token(self) -> None:
        creds = self._credentials
        base = str((self.connection.options or {}).get("oauth_url") or DEFAULT_OAUTH_URL).rstrip(
            "/"
        )
        form = {
            "grant_type": "refresh_token",
            "refresh_token": creds.get("refresh_token"),
            "client_id": creds.get("app_ref"),
        }
        if creds.get("app_secret"):
            form["client_secret"] = creds["app_secret"]
        try:
            response = self.session.post(f"{base}/token/{self.account}", data=form, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise BrightpearlError(f"Refreshing the Brightpearl token failed: {exc}") from exc
        body = _json(response)
        if response.status_code >= 500:
            raise BrightpearlError(f"Brightpearl's token service answered {response.status_code}")
        if (
            response.status_code != 200
            or not isinstance(body, Mapping)
            or not body.get("access_token")
        ):
            raise BrightpearlError(
                "Brightpearl refused to refresh the token; reconnect the app "
                f"({response.status_code}: {_message(body) or response.text[:200]}).",
                permanent=True,
                status=response.status_code,
            )
        updated = {**dict(creds), "access_token": body["access_token"]}
        if body.get("refresh_token"):
            updated["refresh_token"] = body["refresh_token"]
        if body.get("api_domain"):
            updated["api_domain"] = body["api_domain"]
        self.connection.credentials = updated
        if self.connection.pk:
            self.connection.save(update_fields=["credentials"])
        log.info("Brightpearl token of connection %s refreshed", self.connection.pk)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        if isinstance(body.get("response"), str):
            return str(body["response"])
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            return f"{errors[0].get('code', '')} {errors[0].get('message', '')}".strip()
        if body.get("error_description") or body.get("error"):
            return str(body.get("error_description") or body.get("error"))
    return ""


def _is_request_fault(body: Any) -> bool:
    if not isinstance(body, Mapping) or not isinstance(body.get("errors"), list):
        return False
    return any(
        isinstance(e, Mapping) and "cannot be parsed" in str(e.get("message", ""))
        for e in body["errors"]
    )


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
