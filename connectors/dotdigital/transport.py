"""How one call reaches DotDigital: budget, HTTP request, typed error, wait or rediscover.

`Transport._call` is the only place a request is sent. It takes the call's tier from the account's
shared rate budget (`connectors.budget`; waiting up to `max_wait` for room), sends the request on
the region's endpoint (found by `discover` from account-info on first use), feeds the answer's
rate headers back to the budget and turns an error answer into its typed error (`errors`). A 429
blocks the tier for everyone for a second, after which one call probes (`RATE_LIMIT_PROBE`), twice
as long each time a probe meets another (`RATE_LIMIT_PROBE_MAX` at most), and is waited out when
that fits in `max_wait`; a 403 from the wrong region rediscovers the endpoint once and tries
again. Everything else is raised to the caller.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from connectors.budget import Lane, RateBudget, TierLimit

from . import errors
from .types import AccountInfo

logger = logging.getLogger(__name__)

DISCOVERY_URL = "https://r1-api.dotdigital.com"
# Seconds a tiered 429 blocks its tier before a call probes again; doubled while each probe meets
# another 429 (the window really is spent), up to the most.
RATE_LIMIT_PROBE = 1.0
RATE_LIMIT_PROBE_MAX = 4.0
# Per-minute limits assumed until the first answer's X-RateLimit-* headers give the account's own
# (dotdigital-api.md 6.1 publishes only "Low/Basic = 35"); enrolments are 20 an hour (6.3).
DEFAULT_TIERS: dict[str, TierLimit] = {
    "single": TierLimit(600),
    "import": TierLimit(120),
    "status": TierLimit(1200),
    "read": TierLimit(300),
    "enrolment": TierLimit(20, 3600.0),
}
OFFICIAL_HOST = re.compile(
    r"^((r\d+-)?api\.(dotdigital|dotmailer)\.com|(r\d+\.)?apiconnector\.com)$", re.IGNORECASE
)
SCHEMA_FAILURES = {
    "jsonvalueincompatiblewithschema",
    "jsondoesnotmatchschema",
    "inconsistenttypes",
    "jsoncontainsdashunderscoreclash",
}


# A 502/503/504 to an idempotent call is tried once more at once, through the budget like any
# call (why not urllib3's Retry: its retries would go around the rate budget): DotDigital's
# passing 503s would otherwise cost a dispatch a trip back through the outbox, a second or
# more. A second error goes back to the row with backoff; a POST (an import, an enrolment)
# never repeats here, since it may have applied.
AGAIN_AT_ONCE = frozenset({502, 503, 504})
IDEMPOTENT = frozenset({"GET", "PUT", "PATCH", "DELETE"})
AGAIN_PAUSE = 0.05


@dataclass(frozen=True)
class Timeouts:
    """Seconds per call class: one record, one page, and imports and polls (DotDigital's 121)."""

    connect: float = 5.0
    single: float = 10.0
    read: float = 30.0
    bulk: float = 121.0


# Per account and tier, this process's last block after a 429: (its seconds, its end). Kept for
# the process, not the client: each claim builds its own.
_blocks: dict[tuple[str, str], tuple[float, float]] = {}
_blocks_lock = threading.Lock()


def _probe_after(account_key: str, tier: str, now: float) -> float:
    """Seconds to block `tier` after a 429 at `now`: `RATE_LIMIT_PROBE`, or twice the last block
    when this 429 answered the probe after it (came within a probe's time of its end), up to
    `RATE_LIMIT_PROBE_MAX`. A 429 to a call sent before the block began leaves the block as is."""
    key = (account_key, tier)
    with _blocks_lock:
        seconds, until = _blocks.get(key, (0.0, 0.0))
        if now < until:
            return until - now
        if seconds and now <= until + RATE_LIMIT_PROBE:
            seconds = min(seconds * 2, RATE_LIMIT_PROBE_MAX)
        else:
            seconds = RATE_LIMIT_PROBE
        _blocks[key] = (seconds, now + seconds)
        return seconds


def forget_rate_limit_blocks() -> None:
    """Start afresh (tests: each has its own clock)."""
    with _blocks_lock:
        _blocks.clear()


class Transport:
    """One DotDigital account's calls, by one API user, on one lane of the shared budget."""

    def __init__(
        self,
        api_user: str,
        password: str,
        *,
        endpoint: str | None = None,
        discovery_url: str = DISCOVERY_URL,
        account_key: str | None = None,
        lane: Lane = Lane.BULK,
        timeouts: Timeouts | None = None,
        tiers: Mapping[str, TierLimit] | None = None,
        reserve: float = 0.2,
        pace: float = 0.0,
        budget: RateBudget | None = None,
        max_wait: float = 5.0,
        session: requests.Session | None = None,
        on_discovered: Callable[[AccountInfo], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_user = api_user
        self.discovery_url = discovery_url.rstrip("/")
        self.endpoint = self._checked_endpoint(endpoint) if endpoint else None
        self.account_key = account_key or f"dotdigital:{api_user.lower()}"
        self.lane = lane
        self.timeouts = timeouts or Timeouts()
        self.budget = budget or RateBudget(
            self.account_key, tiers or DEFAULT_TIERS, reserve=reserve, pace=pace
        )
        # How long a call may wait on the budget (or for an import slot) before it raises
        # RateLimited / TooManyImports with retry_after, leaving the wait to the caller's row.
        self.max_wait = max_wait
        self.session = session or requests.Session()
        # Kept only inside the session's auth, which requests turns into the header per call.
        self.session.auth = (api_user, password)
        self.session.headers.update({"Accept": "application/json"})
        self.on_discovered = on_discovered
        self.sleep = sleep

    def _checked_endpoint(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        discovery = urlsplit(self.discovery_url)
        official = parts.scheme == "https" and OFFICIAL_HOST.match(parts.hostname or "")
        same_origin = (parts.scheme, parts.netloc) == (discovery.scheme, discovery.netloc)
        if not (official or same_origin):
            raise errors.ConnectionProblem(
                f"account-info named an API endpoint that is not DotDigital's: {endpoint!r}",
                code="endpoint",
            )
        return endpoint.rstrip("/")

    def discover(self) -> AccountInfo:
        """Ask account-info which region's endpoint serves this account, and use it from now on."""
        response = self._call(
            "GET",
            "/v2/account-info",
            tier="read",
            timeout=self.timeouts.read,
            base=self.discovery_url,
        )
        body = response.json()
        props = {
            str(p.get("name")): str(p.get("value"))
            for p in body.get("properties") or []
            if isinstance(p, dict)
        }
        endpoint = props.get("ApiEndpoint")
        if not endpoint:
            raise errors.ConnectionProblem(
                "account-info did not name an ApiEndpoint", code="endpoint", status=200
            )
        info = AccountInfo(str(body.get("id", "")), self._checked_endpoint(endpoint), props)
        self.endpoint = info.api_endpoint
        if self.on_discovered is not None:
            self.on_discovered(info)
        return info

    def _call(
        self,
        method: str,
        path: str,
        *,
        tier: str,
        timeout: float,
        label: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        base: str | None = None,
        ok: Sequence[int] = (),
    ) -> requests.Response:
        """One call within the budget; an error answer (not in `ok`) raises its typed error."""
        label = f"{method} {label or path}"
        waited = 0.0
        rediscovered = base is not None
        retried = False
        while True:
            waited = self._take_budget(tier, method, label, waited)
            root = base or self.endpoint or self.discover().api_endpoint
            response = self._send(method, root + path, label, timeout, params, body, data)
            status = response.status_code
            if status != 429:  # a 429's "none left" is checked by a probe, not believed (below)
                self.budget.observe_headers(tier, response.headers)
            if status < 400 or status in ok:
                return response
            error = self._error(response, label, method)
            if isinstance(error, errors.RateLimited) and not isinstance(
                error, errors.TooManyImports
            ):
                pause = self._rate_limited(error, tier, label, waited)
                if pause is not None:
                    waited += pause
                    continue
            if status in AGAIN_AT_ONCE and method in IDEMPOTENT and not retried:
                retried = True
                logger.info("%s: %s; once more at once", label, status)
                self.sleep(AGAIN_PAUSE)
                continue
            if isinstance(error, errors.WrongRegion) and not rediscovered:
                rediscovered = True
                old = self.endpoint
                self.discover()
                if self.endpoint != old:
                    continue
            raise error

    def _take_budget(self, tier: str, method: str, label: str, waited: float) -> float:
        """Wait for room in `tier`, `max_wait` at most in all; the seconds waited by then."""
        while not (grant := self.budget.acquire(tier, self.lane)):
            if waited + grant.wait > self.max_wait:
                raise errors.RateLimited(
                    f"{label}: the {tier} rate budget is spent; retry in {grant.wait:.1f}s",
                    retry_after=grant.wait,
                    method=method,
                    path=label,
                )
            self.sleep(grant.wait)
            waited += grant.wait
        return waited

    def _send(
        self,
        method: str,
        url: str,
        label: str,
        timeout: float,
        params: Mapping[str, Any] | None,
        body: Any,
        data: bytes | None,
    ) -> requests.Response:
        """The HTTP request itself; no answer at all raises CallTimeout or ConnectionDropped."""
        started = time.monotonic()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=body,
                data=data,
                headers=headers,
                timeout=(self.timeouts.connect, timeout),
            )
        except requests.RequestException as exc:
            if _never_sent(exc):
                raise errors.NotSent(
                    f"{label}: no connection to DotDigital ({type(exc).__name__})",
                    method=method,
                    path=label,
                ) from None
            if isinstance(exc, requests.Timeout):
                raise errors.CallTimeout(
                    f"{label}: no answer within {timeout:g}s", method=method, path=label
                ) from None
            # The exception is not chained: requests' carries the prepared request, headers
            # and all, and a traceback renderer could show it.
            raise errors.ConnectionDropped(
                f"{label}: connection failed ({type(exc).__name__})", method=method, path=label
            ) from None
        logger.debug(
            "%s -> %s in %.0f ms",
            label,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _rate_limited(
        self, error: errors.RateLimited, tier: str, label: str, waited: float
    ) -> float | None:
        """Block the tier (or the account) as told; wait it out if that fits in `max_wait`.

        Returns the seconds slept, or None when the caller has to raise the error instead.
        """
        retry_after = error.retry_after or 60.0
        if error.code == "ERROR_APIUSAGE_EXCEEDED":
            self.budget.block_all(retry_after)
        else:
            # The tier waits a second, not the whole window the 429 names: then the next
            # call probes, and its answer's headers say how much of the window is really left.
            # A passing 429 (DotDigital under load, a storm that is over) costs a second, not
            # the rest of the minute; a window really spent costs a 429 every 4 s.
            probe = _probe_after(self.budget.account_key, tier, self.budget.clock())
            retry_after = min(retry_after, probe)
            self.budget.block(tier, retry_after)
        error.retry_after = retry_after
        if waited + retry_after > self.max_wait:
            return None
        logger.info("%s: rate limited; waiting %.1fs as told", label, retry_after)
        self.sleep(retry_after)
        return retry_after

    def _error(
        self, response: requests.Response, label: str, method: str
    ) -> errors.DotDigitalError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        message = str(body.get("message") or "")
        code = str(body.get("errorCode") or errors.error_token(message))
        text = str(body.get("description") or message or response.reason or "")
        details = [d for d in body.get("details") or [] if isinstance(d, dict)]
        kwargs: dict[str, Any] = {
            "status": status,
            "code": code,
            "text": text,
            "details": details,
            "method": method,
            "path": label,
        }
        summary = f"{label} -> {status} {code}: {text}".rstrip(": ")
        lowered = code.lower()
        if (
            status == 429
            or code == "ERROR_APIUSAGE_EXCEEDED"
            or lowered.endswith(":apiusageexceeded")
        ):
            if lowered.endswith("toomanyactiveimports") or code == (
                "ERROR_IMPORT_TOOMANYACTIVEIMPORTS"
            ):
                return errors.TooManyImports(summary, retry_after=5.0, **kwargs)
            return errors.RateLimited(summary, retry_after=self._retry_after(response), **kwargs)
        if code == "ERROR_IMPORT_TOOMANYACTIVEIMPORTS":
            return errors.TooManyImports(summary, retry_after=5.0, **kwargs)
        if code == "ERROR_ENROLMENT_ALLOWANCE_EXCEEDED":
            return errors.RateLimited(summary, retry_after=3600.0, **kwargs)
        if status >= 500 or code in (
            "ERROR_SYSTEM_SERVICETEMPORARILYUNAVAILABLE",
            "ERROR_ADDRESSBOOK_IN_USE",
        ):
            return errors.ServerError(summary, retry_after=self._retry_after(response), **kwargs)
        if status == 401:
            return errors.AuthenticationFailed(summary, **kwargs)
        if code == "ERROR_FEATURENOTACTIVE" or lowered.endswith(":featurenotactive"):
            return errors.FeatureNotActive(summary, **kwargs)
        if (
            "STORAGE_ALLOWANCE" in code
            or "allowanceexceeded" in lowered
            or ("TransactionalDataAllowanceInMegabytes" in text)
        ):
            return errors.AllowanceExceeded(summary, **kwargs)
        if status == 403:
            return errors.WrongRegion(summary, **kwargs)
        if status == 404:
            return errors.NotFound(summary, **kwargs)
        if "DATAFIELD" in code or "datafield" in lowered:
            return errors.DataFieldError(summary, **kwargs)
        reasons = {str(d.get("description", "")).lower() for d in details} | {text.lower()}
        if (
            "schema" in lowered
            or code == "ERROR_TRANSACTIONAL_DATA_VALIDATION_FAILED"
            or any(name in reason for reason in reasons for name in SCHEMA_FAILURES)
        ):
            return errors.SchemaMismatch(summary, **kwargs)
        return errors.ValidationFailed(summary, **kwargs)

    def _retry_after(self, response: requests.Response) -> float | None:
        reset = response.headers.get("X-RateLimit-Reset")
        if reset:
            try:
                return max(0.0, float(reset) - self.budget.clock())
            except ValueError:
                pass
        retry = response.headers.get("Retry-After")
        if retry and retry.isdigit():
            return float(retry)
        return None


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed before a connection was made (refused, or the connect timeout),
    so no byte of it reached DotDigital."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    # requests wraps urllib3's NewConnectionError (refused, unreachable) in its ConnectionError;
    # matched by name: urllib3 is requests' dependency, not ours.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return any(cls.__name__ == "NewConnectionError" for cls in type(reason).__mro__)
