"""The DotDigital client: HTTP, Basic auth, region discovery, typed errors, per-class timeouts.

Every call first takes its tier's share of the account's shared rate budget (`connectors.budget`)
and feeds the answer's rate headers back to it; imports also hold one of the account's import
slots (25 contact, 5 insight) from submission until a poll sees them finished.

    client = DotDigitalClient.for_connection(connection, lane=Lane.REALTIME)
    result = client.upsert_contact(ContactWrite(email="jane@example.com", data_fields={...}))
    handles = client.import_contacts(items)          # split to DotDigital's body limit
    status = client.poll_import(handles[0])          # failures keyed by each record's key

Errors are `errors.RetryableError` (try later; `retry_after`), `errors.ConnectionProblem` (pause
the connection) or `errors.RecordError` (this record); suppressed and unsubscribed contacts are
results (`Outcome`), not errors.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

from connectors.budget import ConcurrencyCap, Lane, RateBudget, TierLimit

from . import errors
from .types import (
    AccountInfo,
    AddressBook,
    CollectionSchema,
    Contact,
    ContactPage,
    ContactWrite,
    DataField,
    Enrolment,
    FailureKind,
    ImportHandle,
    ImportKind,
    ImportState,
    ImportStatus,
    InsightRecord,
    InsightWrite,
    Outcome,
    Program,
    RecordFailure,
    RecordPage,
    SchemaField,
    Suppression,
    UpsertResult,
)

if TYPE_CHECKING:
    from connectors.models import Connection

logger = logging.getLogger(__name__)

DISCOVERY_URL = "https://r1-api.dotdigital.com"
# Per-minute limits assumed until the first answer's X-RateLimit-* headers give the account's own
# (dotdigital-api.md 6.1 publishes only "Low/Basic = 35"); enrolments are 20 an hour (6.3).
DEFAULT_TIERS: dict[str, TierLimit] = {
    "single": TierLimit(600),
    "import": TierLimit(120),
    "status": TierLimit(1200),
    "read": TierLimit(300),
    "enrolment": TierLimit(20, 3600.0),
}
IMPORT_CAPS = {ImportKind.CONTACTS: 25, ImportKind.INSIGHT: 5}
MAX_BODY_BYTES = 50 * 1024 * 1024
# A little under the 50 MB limit: headers and our own rounding never push a body over it.
DEFAULT_MAX_BODY_BYTES = 48 * 1024 * 1024
# Without a published count limit, a count cap keeps each import quick to apply and to poll.
DEFAULT_MAX_RECORDS = 20_000
PATCH_MERGE_OPTIONS = ("overwrite", "overwrite-if-not-empty", "overwrite-if-empty")
IMPORT_MERGE_OPTIONS = {
    "overwrite": "overwrite",
    "overwrite-if-not-empty": "overwriteIfNotEmpty",
    "overwrite-if-empty": "overwriteIfEmpty",
}
OFFICIAL_HOST = re.compile(
    r"^((r\d+-)?api\.(dotdigital|dotmailer)\.com|(r\d+\.)?apiconnector\.com)$", re.IGNORECASE
)
GLOBALLY_SUPPRESSED = {
    "suppressed",
    "hardBounced",
    "ispComplained",
    "directComplaint",
    "spamTrap",
    "blockedlocalpart",
    "sharedsuppression",
    "sharedDomainSuppression",
    "knownComplainer",
    "knownLitigator",
    "domainSuppressed",
    "purchased",
}
SUPPRESSION_FAILURES = {
    "globallysuppressed",
    "suppressedbydomain",
    "blocker",
    "unsubscribed",
    "hardbounced",
    "ispcomplaints",
    "domainsuppressed",
    "mailblocked",
    "suppressedbyyou",
}
# Insight failures that clear up by themselves: the contact is still being written.
TRANSIENT_INSIGHT_FAILURES = {
    "contactemaildoesnotexist",
    "contactiddoesnotexist",
    "contactphonenumberdoesnotexist",
}
SCHEMA_FAILURES = {
    "jsonvalueincompatiblewithschema",
    "jsondoesnotmatchschema",
    "inconsistenttypes",
    "jsoncontainsdashunderscoreclash",
}
FINISHED = {"finished", "complete"}
FAILED = {
    "failed",
    "rejectedbywatchdog",
    "invalidfileformat",
    "unknown",
    "exceedsallowedcontactlimit",
    "notavailableinthisversion",
}


@dataclass(frozen=True)
class Timeouts:
    """Seconds per call class: one record, one page, and imports and polls (DotDigital's 121)."""

    connect: float = 5.0
    single: float = 10.0
    read: float = 30.0
    bulk: float = 121.0


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def split_bodies(
    records: Sequence[bytes], overhead: int, max_bytes: int, max_records: int
) -> list[tuple[int, int]]:
    """Index ranges [start, stop) of `records` whose joined bodies stay within both limits."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, overhead
    for index, record in enumerate(records):
        extra = len(record) + (1 if index > start else 0)
        if overhead + len(record) > max_bytes:
            raise ValueError(f"record {index} alone is over the {max_bytes}-byte body limit")
        if index > start and (size + extra > max_bytes or index - start >= max_records):
            ranges.append((start, index))
            start, size = index, overhead
            extra = len(record)
        size += extra
    if start < len(records):
        ranges.append((start, len(records)))
    return ranges


class DotDigitalClient:
    """One DotDigital account, seen by one API user, on one lane of the shared budget."""

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
        budget: RateBudget | None = None,
        import_caps: Mapping[ImportKind, ConcurrencyCap] | None = None,
        import_slot_ttl: float = 900.0,
        max_wait: float = 5.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_records: int = DEFAULT_MAX_RECORDS,
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
            self.account_key, tiers or DEFAULT_TIERS, reserve=reserve
        )
        self.import_caps = dict(import_caps or {}) or {
            kind: ConcurrencyCap(
                self.account_key,
                f"imports:{kind.value}",
                cap,
                ttl=import_slot_ttl,
                backend=self.budget.backend,
            )
            for kind, cap in IMPORT_CAPS.items()
        }
        # How long a call may wait on the budget (or for an import slot) before it raises
        # RateLimited / TooManyImports with retry_after, leaving the wait to the caller's row.
        self.max_wait = max_wait
        self.max_body_bytes = min(max_body_bytes, MAX_BODY_BYTES)
        self.max_records = max_records
        self.session = session or requests.Session()
        # Kept only inside the session's auth, which requests turns into the header per call.
        self.session.auth = (api_user, password)
        self.session.headers.update({"Accept": "application/json"})
        self.on_discovered = on_discovered
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"<DotDigitalClient {self.api_user} {self.endpoint or '(undiscovered)'}>"

    @classmethod
    def for_connection(cls, connection: Connection, **kwargs: Any) -> DotDigitalClient:
        """A client for a DotDigital `Connection`; the discovered endpoint is cached in its options."""
        creds: Mapping[str, Any] = connection.credentials or {}
        options = connection.options or {}

        def remember(info: AccountInfo) -> None:
            merged = {
                **(connection.options or {}),
                "api_endpoint": info.api_endpoint,
                "account_id": info.account_id,
            }
            connection.options = merged
            if connection.pk:
                type(connection).objects.filter(pk=connection.pk).update(options=merged)

        account = options.get("account_id")
        kwargs.setdefault("endpoint", options.get("api_endpoint") or None)
        kwargs.setdefault("discovery_url", options.get("discovery_url") or DISCOVERY_URL)
        if account:
            kwargs.setdefault("account_key", f"dotdigital:{account}")
        if options.get("timeouts"):
            kwargs.setdefault("timeouts", Timeouts(**options["timeouts"]))
        return cls(
            str(creds.get("api_user", "")),
            str(creds.get("password", "")),
            on_discovered=remember,
            **kwargs,
        )

    # -- plumbing -------------------------------------------------------------------------------

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
        while True:
            grant = self.budget.acquire(tier, self.lane)
            if not grant:
                if waited + grant.wait > self.max_wait:
                    raise errors.RateLimited(
                        f"{label}: the {tier} rate budget is spent; retry in {grant.wait:.1f}s",
                        retry_after=grant.wait,
                        method=method,
                        path=label,
                    )
                self.sleep(grant.wait)
                waited += grant.wait
                continue
            root = base or self.endpoint or self.discover().api_endpoint
            started = time.monotonic()
            headers = {"Content-Type": "application/json"} if data is not None else None
            try:
                response = self.session.request(
                    method,
                    root + path,
                    params=params,
                    json=body,
                    data=data,
                    headers=headers,
                    timeout=(self.timeouts.connect, timeout),
                )
            except requests.Timeout:
                raise errors.CallTimeout(
                    f"{label}: no answer within {timeout:g}s", method=method, path=label
                ) from None
            except requests.RequestException as exc:
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
            self.budget.observe_headers(tier, response.headers)
            status = response.status_code
            if status < 400 or status in ok:
                return response
            error = self._error(response, label, method)
            if isinstance(error, errors.RateLimited) and not isinstance(
                error, errors.TooManyImports
            ):
                retry_after = error.retry_after or 60.0
                error.retry_after = retry_after
                if error.code == "ERROR_APIUSAGE_EXCEEDED":
                    self.budget.block_all(retry_after)
                else:
                    self.budget.block(tier, retry_after)
                if waited + retry_after <= self.max_wait:
                    logger.info("%s: rate limited; waiting %.1fs as told", label, retry_after)
                    self.sleep(retry_after)
                    waited += retry_after
                    continue
            if isinstance(error, errors.WrongRegion) and not rediscovered:
                rediscovered = True
                old = self.endpoint
                self.discover()
                if self.endpoint != old:
                    continue
            raise error

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

    # -- contacts -------------------------------------------------------------------------------

    def upsert_contact(
        self, contact: ContactWrite, merge_option: str = "overwrite"
    ) -> UpsertResult:
        """Create or update one contact (v3 PATCH). Suppressed/unsubscribed come back as outcomes."""
        if merge_option not in PATCH_MERGE_OPTIONS:
            raise ValueError(f"merge_option must be one of {PATCH_MERGE_OPTIONS}")
        identifier = contact.match_identifier
        value = contact.email if identifier == "email" else contact.mobile_number
        try:
            response = self._call(
                "PATCH",
                f"/contacts/v3/{identifier}/{quote(str(value), safe='@+')}",
                label=f"/contacts/v3/{identifier}/{{value}}",
                tier="single",
                timeout=self.timeouts.single,
                params={"merge-option": merge_option},
                body=contact.body(),
            )
        except errors.RecordError as exc:
            if "suppressed" in exc.code.lower():
                return UpsertResult(None, False, Outcome.SUPPRESSED)
            raise
        parsed = contact_from(response.json())
        channel = parsed.email_status or ""
        if channel in GLOBALLY_SUPPRESSED or parsed.status == "suppressed":
            outcome = Outcome.SUPPRESSED
        elif channel == "unsubscribed":
            outcome = Outcome.UNSUBSCRIBED
        elif channel == "pendingOptIn":
            outcome = Outcome.PENDING_OPT_IN
        else:
            outcome = Outcome.WRITTEN
        return UpsertResult(parsed, response.status_code == 201, outcome)

    def get_contact(self, identifier: str, value: str | int) -> Contact | None:
        """One contact by email, mobileNumber or contactId; None when there is none."""
        response = self._call(
            "GET",
            f"/contacts/v3/{identifier}/{quote(str(value), safe='@+')}",
            label=f"/contacts/v3/{identifier}/{{value}}",
            tier="single",
            timeout=self.timeouts.single,
            ok=(404,),
        )
        if response.status_code == 404:
            return None
        return contact_from(response.json())

    def delete_contact(self, identifier: str, value: str | int) -> bool:
        """Delete one contact (v3 `DELETE /contacts/v3/{identifier}/{value}`) with its list
        memberships and insight data: an erasure request. False when there was none (404)."""
        response = self._call(
            "DELETE",
            f"/contacts/v3/{identifier}/{quote(str(value), safe='@+')}",
            label=f"/contacts/v3/{identifier}/{{value}}",
            tier="single",
            timeout=self.timeouts.single,
            ok=(404,),
        )
        return response.status_code != 404

    def list_contacts(
        self,
        *,
        modified_since: datetime | None = None,
        marker: str | None = None,
        limit: int = 1000,
        data_fields: Sequence[str] = ("[[ALL]]",),
        include: Sequence[str] = ("channelProperties", "lists"),
    ) -> ContactPage:
        """One page of contacts (by ~modified when given); follow `next_marker` for the rest."""
        params: dict[str, Any] = {"limit": limit}
        if modified_since is not None:
            params["~modified"] = f"gte::{iso(modified_since)}"
        if data_fields:
            params["data-fields"] = "|".join(data_fields)
        if include:
            params["include"] = "|".join(include)
        if marker:
            params["marker"] = marker
        response = self._call(
            "GET", "/contacts/v3", tier="read", timeout=self.timeouts.read, params=params
        )
        body = response.json()
        nxt = (body.get("_links") or {}).get("next") or {}
        return ContactPage(
            [contact_from(item) for item in body.get("_items") or []],
            nxt.get("marker") or None,
        )

    def iter_contacts(self, **kwargs: Any) -> Iterator[Contact]:
        marker: str | None = None
        while True:
            page = self.list_contacts(marker=marker, **kwargs)
            yield from page.items
            if not page.next_marker:
                return
            marker = page.next_marker

    # -- imports --------------------------------------------------------------------------------

    def import_contacts(
        self, contacts: Sequence[ContactWrite], merge_option: str = "overwrite"
    ) -> list[ImportHandle]:
        """Submit `contacts` as v3 imports, split to the body and count limits.

        On a failure after some bodies were accepted, the error carries them as `.submitted`.
        """
        option = IMPORT_MERGE_OPTIONS.get(merge_option, merge_option)
        if option not in IMPORT_MERGE_OPTIONS.values():
            raise ValueError(f"merge_option must be one of {sorted(IMPORT_MERGE_OPTIONS)}")
        records = [dumps({"matchIdentifier": c.match_identifier, **c.body()}) for c in contacts]
        head = b'{"mergeOption":' + dumps(option) + b',"contacts":['
        return self._submit_all(
            ImportKind.CONTACTS,
            "/contacts/v3/import",
            head,
            records,
            [c.key for c in contacts],
            None,
        )

    def import_insight(
        self,
        collection: str,
        records: Sequence[InsightWrite],
        *,
        scope: str = "contact",
        collection_type: str = "custom",
    ) -> list[ImportHandle]:
        """Submit insight `records` as v3 imports, split to the body and count limits."""
        encoded = [dumps(r.body()) for r in records]
        head = (
            b'{"collectionName":'
            + dumps(collection)
            + b',"collectionScope":'
            + dumps(scope)
            + b',"collectionType":'
            + dumps(collection_type)
            + b',"records":['
        )
        return self._submit_all(
            ImportKind.INSIGHT,
            "/insightData/v3/import",
            head,
            encoded,
            [str(r.key) for r in records],
            collection,
        )

    def _submit_all(
        self,
        kind: ImportKind,
        path: str,
        head: bytes,
        records: list[bytes],
        keys: list[str],
        collection: str | None,
    ) -> list[ImportHandle]:
        tail = b"]}"
        handles: list[ImportHandle] = []
        for start, stop in split_bodies(
            records, len(head) + len(tail), self.max_body_bytes, self.max_records
        ):
            body = head + b",".join(records[start:stop]) + tail
            try:
                handles.append(
                    self.submit_import(kind, path, body, tuple(keys[start:stop]), collection)
                )
            except errors.DotDigitalError as exc:
                exc.submitted = handles  # type: ignore[attr-defined]
                raise
        return handles

    def submit_import(
        self,
        kind: ImportKind,
        path: str,
        body: bytes,
        keys: tuple[str, ...],
        collection: str | None = None,
    ) -> ImportHandle:
        """PUT one import body while holding one of the account's import slots of `kind`."""
        cap = self.import_caps[kind]
        token = f"pending-{uuid.uuid4()}"
        waited = 0.0
        while not cap.claim(token):
            if waited >= self.max_wait:
                raise errors.TooManyImports(
                    f"PUT {path}: all {cap.cap} {kind.value} import slots are in use",
                    retry_after=5.0,
                    method="PUT",
                    path=path,
                )
            step = min(0.25, self.max_wait - waited)
            self.sleep(step)
            waited += step
        try:
            response = self._call("PUT", path, tier="import", timeout=self.timeouts.bulk, data=body)
            import_id = str(response.json()["importId"])
        except BaseException:
            cap.release(token)
            raise
        cap.rename(token, import_id)
        return ImportHandle(import_id, kind, keys, collection, len(body))

    def poll_import(self, handle: ImportHandle) -> ImportStatus:
        """The import's status; once done its slot is released and failures keyed by record key."""
        base = (
            "/contacts/v3/import/"
            if handle.kind is ImportKind.CONTACTS
            else ("/insightData/v3/import/")
        )
        cap = self.import_caps[handle.kind]
        try:
            response = self._call(
                "GET",
                base + quote(handle.import_id, safe=""),
                label=base + "{importId}",
                tier="status",
                timeout=self.timeouts.bulk,
            )
        except errors.NotFound:
            cap.release(handle.import_id)
            raise
        status = import_status_from(handle, response.json())
        if status.done:
            cap.release(handle.import_id)
        else:
            cap.claim(handle.import_id)  # renew the lease while it runs
        return status

    def wait_for_import(
        self, handle: ImportHandle, *, interval: float = 5.0, timeout: float = 3600.0
    ) -> ImportStatus:
        """Poll every `interval` seconds until done (DotDigital asks for 5–30 s between polls)."""
        waited = 0.0
        while True:
            status = self.poll_import(handle)
            if status.done:
                return status
            if waited >= timeout:
                raise errors.CallTimeout(
                    f"import {handle.import_id} not finished after {timeout:g}s",
                    retry_after=interval,
                )
            self.sleep(interval)
            waited += interval

    # -- insight single records -----------------------------------------------------------------

    def create_collection(self, name: str, *, scope: str = "contact", type: str = "custom") -> bool:
        """Create an insight collection (idempotent); True when it was created now."""
        response = self._call(
            "POST",
            f"/insightData/v3/collections/{quote(name, safe='')}",
            label="/insightData/v3/collections/{collection}",
            tier="single",
            timeout=self.timeouts.single,
            params={"collectionScope": scope, "collectionType": type},
        )
        return response.status_code == 201

    def put_insight_record(self, collection: str, record: InsightWrite) -> bool:
        """Create or replace one insight record (v3 PUT); True when it was created."""
        name, key = quote(collection, safe=""), quote(str(record.key), safe="")
        if record.contact_email is None:
            path = f"/insightData/v3/account/{name}/{key}"
            label = "/insightData/v3/account/{collection}/{recordId}"
        else:
            email = quote(record.contact_email, safe="@+")
            path = f"/insightData/v3/contacts/email/{email}/{name}/{key}"
            label = "/insightData/v3/contacts/email/{value}/{collection}/{recordId}"
        response = self._call(
            "PUT",
            path,
            label=label,
            tier="single",
            timeout=self.timeouts.single,
            body=dict(record.json),
        )
        return response.status_code == 201

    # -- insight reads --------------------------------------------------------------------------

    def list_insight_records(
        self,
        collection: str,
        *,
        contact: tuple[str, str] | None = None,
        modified_since: datetime | None = None,
        marker: str | None = None,
        limit: int = 1000,
    ) -> RecordPage:
        """A page of a collection's records: account-scoped, or one contact's ((identifier, value))."""
        name = quote(collection, safe="")
        if contact is None:
            path, label = f"/insightData/v3/account/{name}", "/insightData/v3/account/{collection}"
        else:
            path = f"/insightData/v3/contacts/{contact[0]}/{quote(contact[1], safe='@+')}/{name}"
            label = f"/insightData/v3/contacts/{contact[0]}/{{value}}/{{collection}}"
        params: dict[str, Any] = {"limit": limit}
        if modified_since is not None:
            params["~modified"] = f"gte::{iso(modified_since)}"
        if marker:
            params["marker"] = marker
        response = self._call(
            "GET", path, label=label, tier="read", timeout=self.timeouts.read, params=params
        )
        body = response.json()
        nxt = (body.get("_links") or {}).get("next") or {}
        return RecordPage(
            [
                InsightRecord(
                    str(item.get("key")),
                    item.get("json") or {},
                    item.get("ownerContactId"),
                    parse_time(item.get("created")),
                    parse_time(item.get("updated")),
                )
                for item in body.get("_items") or []
            ],
            nxt.get("marker") or None,
        )

    def get_collection_schema(self, collection: str) -> CollectionSchema | None:
        """The collection's locked schema; None when the collection does not exist yet."""
        response = self._call(
            "GET",
            f"/insightData/v3/collections/{quote(collection, safe='')}/schema",
            label="/insightData/v3/collections/{collection}/schema",
            tier="read",
            timeout=self.timeouts.read,
            ok=(404,),
        )
        if response.status_code == 404:
            return None
        body = response.json()
        return CollectionSchema(
            str(body.get("collectionName", collection)),
            str(body.get("collectionType", "")),
            tuple(schema_field(f) for f in body.get("schema") or [] if isinstance(f, dict)),
        )

    # -- data fields ----------------------------------------------------------------------------

    def list_data_fields(self) -> list[DataField]:
        response = self._call("GET", "/v2/data-fields", tier="read", timeout=self.timeouts.read)
        return [data_field_from(f) for f in response.json() if isinstance(f, dict)]

    def create_data_field(
        self, name: str, type: str, *, visibility: str = "Private", default: Any = None
    ) -> DataField:
        """Create a data field; if it already exists, the existing one is returned."""
        try:
            response = self._call(
                "POST",
                "/v2/data-fields",
                tier="single",
                timeout=self.timeouts.single,
                body={
                    "name": name,
                    "type": type,
                    "visibility": visibility,
                    "defaultValue": default,
                },
            )
        except errors.DataFieldError as exc:
            if exc.code != "ERROR_NON_UNIQUE_DATAFIELD":
                raise
            for field in self.list_data_fields():
                if field.name.upper() == name.upper():
                    return field
            raise
        try:
            return data_field_from(response.json())
        except ValueError:
            return DataField(name.upper(), type, visibility, default)

    # -- lists ----------------------------------------------------------------------------------

    def list_address_books(self) -> list[AddressBook]:
        books: list[AddressBook] = []
        skip = 0
        while True:
            response = self._call(
                "GET",
                "/v2/address-books",
                tier="read",
                timeout=self.timeouts.read,
                params=paging(1000, skip),
            )
            page = [address_book_from(b) for b in response.json() if isinstance(b, dict)]
            books.extend(page)
            if len(page) < 1000:
                return books
            skip += 1000

    def create_address_book(self, name: str, visibility: str = "Private") -> AddressBook:
        response = self._call(
            "POST",
            "/v2/address-books",
            tier="single",
            timeout=self.timeouts.single,
            body={"name": name, "visibility": visibility},
        )
        return address_book_from(response.json())

    def add_to_list(self, list_id: int, contact: ContactWrite) -> UpsertResult:
        """Put the contact on the list (v3 PATCH with `lists`, creating it if needed)."""
        return self.upsert_contact(replace(contact, lists=(*contact.lists, list_id)))

    def remove_from_list(self, list_id: int, contact_id: int) -> None:
        self._call(
            "DELETE",
            f"/v2/address-books/{int(list_id)}/contacts/{int(contact_id)}",
            label="/v2/address-books/{id}/contacts/{contactId}",
            tier="single",
            timeout=self.timeouts.single,
        )

    # -- suppressions ---------------------------------------------------------------------------

    def suppressions_page(
        self, since: datetime, *, skip: int = 0, select: int = 1000
    ) -> list[Suppression]:
        response = self._call(
            "GET",
            f"/v2/contacts/suppressed-since/{iso(since)}",
            label="/v2/contacts/suppressed-since/{date}",
            tier="read",
            timeout=self.timeouts.read,
            params=paging(select, skip),
        )
        return [suppression_from(s) for s in response.json() if isinstance(s, dict)]

    def suppressions_since(self, since: datetime, *, select: int = 1000) -> Iterator[Suppression]:
        """Every opt-out and bounce since `since`, paged with select/skip."""
        skip = 0
        while True:
            page = self.suppressions_page(since, skip=skip, select=select)
            yield from page
            if len(page) < select:
                return
            skip += select

    def unsubscribe(self, email: str) -> Suppression:
        response = self._call(
            "POST",
            "/v2/contacts/unsubscribe",
            tier="single",
            timeout=self.timeouts.single,
            body={"email": email},
        )
        return suppression_from(response.json())

    # -- programs -------------------------------------------------------------------------------

    def list_programs(self) -> list[Program]:
        programs: list[Program] = []
        skip = 0
        while True:
            response = self._call(
                "GET",
                "/v2/programs",
                tier="read",
                timeout=self.timeouts.read,
                params=paging(1000, skip),
            )
            page = [
                Program(
                    int(p["id"]),
                    str(p.get("name", "")),
                    str(p.get("status", "")),
                    parse_time(p.get("dateCreated")),
                )
                for p in response.json()
                if isinstance(p, dict)
            ]
            programs.extend(page)
            if len(page) < 1000:
                return programs
            skip += 1000

    def enrol(
        self, program_id: int, contact_ids: Sequence[int], address_books: Sequence[int] = ()
    ) -> Enrolment:
        """Enrol contacts in a program: 20 calls an hour per account, and never retried blindly."""
        grant = self.budget.acquire("enrolment", Lane.REALTIME)
        if not grant:
            raise errors.RateLimited(
                f"POST /v2/programs/enrolments: the hourly enrolment allowance is spent; "
                f"retry in {grant.wait:.0f}s",
                retry_after=grant.wait,
                method="POST",
                path="/v2/programs/enrolments",
            )
        body: dict[str, Any] = {"programId": program_id, "contacts": list(contact_ids)}
        if address_books:
            body["addressBooks"] = list(address_books)
        response = self._call(
            "POST",
            "/v2/programs/enrolments",
            tier="single",
            timeout=self.timeouts.single,
            body=body,
        )
        data = response.json()
        return Enrolment(
            str(data.get("id", "")),
            int(data.get("programId", program_id)),
            str(data.get("status", "")),
            tuple(int(c) for c in data.get("contacts") or []),
        )


# -- parsing --------------------------------------------------------------------------------------


def paging(select: int, skip: int) -> dict[str, int]:
    # skip is left out at 0: some published v2 specs declare its minimum as 1.
    return {"select": select, "skip": skip} if skip else {"select": select}


def contact_from(body: Mapping[str, Any]) -> Contact:
    identifiers = body.get("identifiers") or {}
    channels = body.get("channelProperties") or {}
    email = channels.get("email") or {}
    return Contact(
        contact_id=int(body.get("contactId", 0)),
        status=str(body.get("status", "")),
        email=identifiers.get("email"),
        mobile_number=identifiers.get("mobileNumber"),
        email_status=email.get("status"),
        data_fields=dict(body.get("dataFields") or {}),
        lists=tuple(int(lst["id"]) for lst in body.get("lists") or [] if isinstance(lst, dict)),
        created=parse_time(body.get("created")),
        updated=parse_time(body.get("updated")),
    )


def failure_kind(kind: ImportKind, code: str) -> FailureKind:
    lowered = code.replace(" ", "").replace("_", "").lower()
    if lowered in SUPPRESSION_FAILURES:
        return FailureKind.SUPPRESSED
    if kind is ImportKind.INSIGHT and lowered in TRANSIENT_INSIGHT_FAILURES:
        return FailureKind.TRANSIENT
    return FailureKind.RECORD


def import_status_from(handle: ImportHandle, body: Mapping[str, Any]) -> ImportStatus:
    raw = str(body.get("status", ""))
    lowered = raw.lower()
    state = (
        ImportState.FINISHED
        if lowered in FINISHED
        else ImportState.FAILED
        if lowered in FAILED
        else ImportState.PENDING
    )
    failures: dict[str, RecordFailure] = {}
    contact_ids: dict[str, int] = {}
    if handle.kind is ImportKind.CONTACTS:
        for entry in body.get("failures") or []:
            identifiers = entry.get("identifiers") or {}
            match = str(entry.get("matchIdentifier") or "email")
            value = str(identifiers.get(match) or identifiers.get("email") or "")
            key = value.strip().lower() if match == "email" else value.lstrip("+")
            reasons = entry.get("failures") or [{}]
            first = reasons[0]
            code = str(first.get("failureCode", ""))
            failures[key] = RecordFailure(
                key,
                code,
                "; ".join(str(r.get("description", "")) for r in reasons),
                failure_kind(handle.kind, code),
            )
        for group in ("created", "updated"):
            for ref in body.get(group) or []:
                identifiers = ref.get("identifiers") or {}
                email = identifiers.get("email")
                key = (
                    email.strip().lower()
                    if email
                    else str(identifiers.get("mobileNumber", "")).lstrip("+")
                )
                if "contactId" in ref:
                    contact_ids[key] = int(ref["contactId"])
    else:
        for entry in body.get("failures") or []:
            key = str(entry.get("key", ""))
            code = str(entry.get("failureReason", ""))
            failures[key] = RecordFailure(
                key,
                code,
                "; ".join(str(d) for d in entry.get("details") or []),
                failure_kind(handle.kind, code),
            )
    summary = {k: int(v) for k, v in (body.get("summary") or {}).items() if isinstance(v, int)}
    return ImportStatus(handle.import_id, handle.kind, state, raw, summary, failures, contact_ids)


def schema_field(body: Mapping[str, Any]) -> SchemaField:
    return SchemaField(
        str(body.get("name", "")),
        str(body.get("type", "")),
        str(body.get("mode", "")),
        tuple(schema_field(f) for f in body.get("fields") or [] if isinstance(f, dict)),
    )


def data_field_from(body: Mapping[str, Any]) -> DataField:
    if "name" not in body:
        raise ValueError("not a data field")
    return DataField(
        str(body["name"]),
        str(body.get("type", "")),
        str(body.get("visibility", "")),
        body.get("defaultValue"),
    )


def address_book_from(body: Mapping[str, Any]) -> AddressBook:
    return AddressBook(
        int(body["id"]),
        str(body.get("name", "")),
        str(body.get("visibility", "")),
        int(body.get("contacts") or 0),
    )


def suppression_from(body: Mapping[str, Any]) -> Suppression:
    contact = body.get("suppressedContact") or {}
    removed = parse_time(body.get("dateRemoved")) or datetime.now(UTC)
    return Suppression(
        int(contact.get("id") or 0),
        str(contact.get("email") or ""),
        str(body.get("reason", "")),
        removed,
    )
