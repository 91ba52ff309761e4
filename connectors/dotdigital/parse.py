"""DotDigital's JSON answers read into the typed objects of `types`.

An import's failure codes are sorted here too (`failure_kind`): suppressed, transient (insight for
a contact still being written) or a fault of the record itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .types import (
    AddressBook,
    Contact,
    DataField,
    FailureKind,
    ImportHandle,
    ImportKind,
    ImportState,
    ImportStatus,
    RecordFailure,
    SchemaField,
    Suppression,
)

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
FINISHED = {"finished", "complete"}
FAILED = {
    "failed",
    "rejectedbywatchdog",
    "invalidfileformat",
    "unknown",
    "exceedsallowedcontactlimit",
    "notavailableinthisversion",
}


def parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
