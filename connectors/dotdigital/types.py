"""What the client sends and what it gets back, as small typed objects."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# -- what the engine sends --------------------------------------------------------------------


@dataclass(frozen=True)
class ContactWrite:
    """One contact to upsert, by PATCH or in an import.

    `email_status` is only set by consent changes ("subscribed" / "unsubscribed"); None leaves
    the channel alone, so a contact created from an order carries no subscription change. A
    data field given as None is cleared in DotDigital.
    """

    email: str | None = None
    mobile_number: str | None = None
    data_fields: Mapping[str, Any] = field(default_factory=dict)
    email_status: str | None = None
    opt_in_type: str | None = None  # unknown | single | double | verifiedDouble
    email_type: str | None = None  # html | plainText
    lists: tuple[int, ...] = ()
    consent_records: tuple[Mapping[str, str], ...] = ()

    @property
    def match_identifier(self) -> str:
        return "email" if self.email else "mobileNumber"

    @property
    def key(self) -> str:
        """The value the engine knows this record by: the normalised email (else the mobile)."""
        if self.email:
            return self.email.strip().lower()
        return (self.mobile_number or "").lstrip("+")

    def identifiers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.email:
            out["email"] = self.email
        if self.mobile_number:
            out["mobileNumber"] = self.mobile_number
        return out

    def body(self) -> dict[str, Any]:
        """The v3 contact body shared by PATCH and import (without matchIdentifier)."""
        body: dict[str, Any] = {"identifiers": self.identifiers()}
        if self.data_fields:
            body["dataFields"] = dict(self.data_fields)
        email: dict[str, Any] = {}
        if self.email_status is not None:
            email["status"] = self.email_status
            # Never re-subscribe without the contact's own confirmation (PECR/GDPR): a stale
            # source flag must not undo an opt-out made in DotDigital.
            email["resubscribeOptions"] = {"resubscribeWithNoChallenge": False}
        if self.opt_in_type is not None:
            email["optInType"] = self.opt_in_type
        if self.email_type is not None:
            email["emailType"] = self.email_type
        if email:
            body["channelProperties"] = {"email": email}
        if self.lists:
            body["lists"] = list(self.lists)
        if self.consent_records:
            body["consentRecords"] = [dict(r) for r in self.consent_records]
        return body


@dataclass(frozen=True)
class InsightWrite:
    """One insight record. `contact_email` None means an account-scoped record."""

    key: str
    json: Mapping[str, Any]
    contact_email: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": str(self.key), "json": dict(self.json)}
        if self.contact_email is not None:
            out["contactIdentity"] = {"identifier": "email", "value": self.contact_email}
        return out


# -- what comes back --------------------------------------------------------------------------


class Outcome(enum.StrEnum):
    """What a single-record write did, and the email channel it left the contact in."""

    WRITTEN = "written"
    # Written, but the contact must confirm first (re-subscribe challenge or double opt-in).
    PENDING_OPT_IN = "pending_opt_in"
    # Written, but the contact is unsubscribed from email (an opt-out DotDigital keeps).
    UNSUBSCRIBED = "unsubscribed"
    # Nothing written: the contact is globally suppressed (bounced, complained, blocked...).
    SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class Contact:
    contact_id: int
    status: str
    email: str | None
    mobile_number: str | None
    email_status: str | None
    data_fields: dict[str, Any]
    lists: tuple[int, ...]
    created: datetime | None
    updated: datetime | None


@dataclass(frozen=True)
class UpsertResult:
    contact: Contact | None  # None only when DotDigital refused it as suppressed
    created: bool
    outcome: Outcome

    @property
    def skipped(self) -> bool:
        """True when DotDigital wrote nothing (the contact is suppressed)."""
        return self.outcome is Outcome.SUPPRESSED


@dataclass(frozen=True)
class ContactPage:
    items: list[Contact]
    next_marker: str | None


class ImportKind(enum.StrEnum):
    CONTACTS = "contacts"
    INSIGHT = "insight"


@dataclass(frozen=True)
class ImportHandle:
    """A submitted import: its id and the keys of the records it carries, in order."""

    import_id: str
    kind: ImportKind
    keys: tuple[str, ...]
    collection: str | None = None
    body_bytes: int = 0


class FailureKind(enum.StrEnum):
    RECORD = "record"  # open an exception for this record's group
    TRANSIENT = "transient"  # retry with backoff (e.g. its contact is still being written)
    SUPPRESSED = "suppressed"  # everyday business: skip with this reason


@dataclass(frozen=True)
class RecordFailure:
    key: str
    code: str
    text: str
    kind: FailureKind


class ImportState(enum.StrEnum):
    PENDING = "pending"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(frozen=True)
class ImportStatus:
    """A polled import. When FINISHED, a record is delivered iff its key is not in `failures`."""

    import_id: str
    kind: ImportKind
    state: ImportState
    raw_status: str
    summary: dict[str, int]
    failures: dict[str, RecordFailure]
    contact_ids: dict[str, int]  # contacts only: key -> DotDigital contactId

    @property
    def done(self) -> bool:
        return self.state is not ImportState.PENDING


@dataclass(frozen=True)
class InsightRecord:
    key: str
    json: dict[str, Any]
    contact_id: int | None
    created: datetime | None
    updated: datetime | None


@dataclass(frozen=True)
class RecordPage:
    items: list[InsightRecord]
    next_marker: str | None


@dataclass(frozen=True)
class SchemaField:
    name: str
    type: str
    mode: str
    fields: tuple[SchemaField, ...] = ()


@dataclass(frozen=True)
class CollectionSchema:
    name: str
    type: str
    fields: tuple[SchemaField, ...]


@dataclass(frozen=True)
class DataField:
    name: str
    type: str  # String | Numeric | Date | Boolean
    visibility: str
    default_value: Any


@dataclass(frozen=True)
class AddressBook:
    id: int
    name: str
    visibility: str
    contacts: int


@dataclass(frozen=True)
class Suppression:
    contact_id: int
    email: str
    reason: str
    date_removed: datetime


@dataclass(frozen=True)
class Program:
    id: int
    name: str
    status: str
    date_created: datetime | None


@dataclass(frozen=True)
class Enrolment:
    id: str
    program_id: int
    status: str
    contacts: tuple[int, ...]


@dataclass(frozen=True)
class AccountInfo:
    account_id: str
    api_endpoint: str
    properties: dict[str, str]
