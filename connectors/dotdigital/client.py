"""The DotDigital client: one object for every call the engine makes to a DotDigital account.

    client = DotDigitalClient.for_connection(connection, lane=Lane.REALTIME)
    result = client.upsert_contact(ContactWrite(email="jane@example.com", data_fields={...}))
    handles = client.import_contacts(items)          # split to DotDigital's body limit
    status = client.poll_import(handles[0])          # failures keyed by each record's key

How a call reaches DotDigital: a method here (or in `imports`, for bulk imports) builds the
request, `transport.Transport._call` takes the tier's share of the account's shared rate budget,
sends it, feeds the rate headers back and raises an error answer as its typed error; `parse`
reads the answer into the objects of `types`.

Errors are `errors.RetryableError` (try later; `retry_after`), `errors.ConnectionProblem` (pause
the connection) or `errors.RecordError` (this record); suppressed and unsubscribed contacts are
results (`Outcome`), not errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from connectors.budget import ConcurrencyCap, Lane, RateBudget, TierLimit

from . import errors
from .imports import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_RECORDS,
    MAX_BODY_BYTES,
    ImportCalls,
    default_import_caps,
)
from .parse import (
    address_book_from,
    contact_from,
    data_field_from,
    parse_time,
    schema_field,
    suppression_from,
)
from .transport import DISCOVERY_URL, Timeouts
from .types import (
    AccountInfo,
    AddressBook,
    CollectionSchema,
    Contact,
    ContactPage,
    ContactWrite,
    DataField,
    Enrolment,
    ImportKind,
    InsightRecord,
    InsightWrite,
    Outcome,
    Program,
    RecordPage,
    Suppression,
    UpsertResult,
)

if TYPE_CHECKING:
    from connectors.models import Connection

PATCH_MERGE_OPTIONS = ("overwrite", "overwrite-if-not-empty", "overwrite-if-empty")
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


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def paging(select: int, skip: int) -> dict[str, int]:
    # skip is left out at 0: some published v2 specs declare its minimum as 1.
    return {"select": select, "skip": skip} if skip else {"select": select}


class DotDigitalClient(ImportCalls):
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
        pace: float = 0.0,
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
        super().__init__(
            api_user,
            password,
            endpoint=endpoint,
            discovery_url=discovery_url,
            account_key=account_key,
            lane=lane,
            timeouts=timeouts,
            tiers=tiers,
            reserve=reserve,
            pace=pace,
            budget=budget,
            max_wait=max_wait,
            session=session,
            on_discovered=on_discovered,
            sleep=sleep,
        )
        self.import_caps = dict(import_caps or {}) or default_import_caps(
            self.account_key, self.budget, import_slot_ttl
        )
        self.max_body_bytes = min(max_body_bytes, MAX_BODY_BYTES)
        self.max_records = max_records

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
