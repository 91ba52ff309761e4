"""What a contact write may contain: identifiers, channels, data fields of the right type, lists.

Shared by every way a contact is written (v3 PATCH, v3 import, v2 unsubscribe) through
`contact_writer.ContactWriter`, so each answers a bad record the same way DotDigital does.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from .store import parse_iso

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MOBILE_RE = re.compile(r"^\+?[1-9]\d{6,14}$")

# Email statuses that make a contact "globally suppressed": imports and PATCHes leave it alone.
GLOBALLY_SUPPRESSED = {
    "hardBounced",
    "ispComplained",
    "directComplaint",
    "spamTrap",
    "suppressed",
    "blockedlocalpart",
    "sharedsuppression",
    "sharedDomainSuppression",
    "knownComplainer",
    "knownLitigator",
    "domainSuppressed",
    "purchased",
}
# v2 suppression reasons (ApiContactStatuses) <-> v3 email channel statuses.
REASON_TO_STATUS = {
    "Unsubscribed": "unsubscribed",
    "HardBounced": "hardBounced",
    "IspComplained": "ispComplained",
    "DirectComplaint": "directComplaint",
    "Suppressed": "suppressed",
    "MailBlocked": "blockedlocalpart",
    "SharedSuppression": "sharedsuppression",
    "DomainSuppression": "domainSuppressed",
    "SoftBounced": "softBounced",
}
STATUS_TO_REASON = {v: k for k, v in REASON_TO_STATUS.items()}
EMAIL_TYPES = {"html": "Html", "plaintext": "PlainText"}
OPT_IN_TYPES = {
    "unknown": "Unknown",
    "single": "Single",
    "double": "Double",
    "verifieddouble": "VerifiedDouble",
}
MERGE_OPTIONS = {
    "overwrite": "overwrite",
    "overwriteifnotempty": "ifNotEmpty",
    "overwrite-if-not-empty": "ifNotEmpty",
    "overwriteifempty": "ifEmpty",
    "overwrite-if-empty": "ifEmpty",
}
CONSENT_KEYS = ("text", "dateTimeConsented", "url", "ipAddress", "userAgent")


@dataclass
class Failure:
    code: str
    description: str
    item: str = ""


def normalise_email(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


def data_field_types(db: sqlite3.Connection) -> dict[str, str]:
    return {row["name"]: row["type"] for row in db.execute("SELECT name, type FROM data_fields")}


def coerce_field(kind: str, value: Any) -> tuple[bool, Any]:
    """Whether `value` fits a data field of type `kind`, and the value as stored."""
    if value is None:
        return True, None
    if kind == "String":
        return isinstance(value, str), value
    if kind == "Numeric":
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int | float):
            return True, value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return False, value
            return True, int(number) if number.is_integer() and "." not in value else number
        return False, value
    if kind == "Date":
        if not isinstance(value, str):
            return False, value
        try:
            parse_iso(value)
        except ValueError:
            return False, value
        return True, value
    if kind == "Boolean":
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return True, value.lower() == "true"
        return False, value
    return False, value


def consent_ok(item: dict[str, Any]) -> bool:
    records = item.get("consentRecords")
    if records is None:
        return True
    return (
        isinstance(records, list)
        and 1 <= len(records) <= 5
        and all(isinstance(r, dict) and all(r.get(k) for k in CONSENT_KEYS) for r in records)
    )


def match_failure(identifiers: dict[str, Any], match: str) -> Failure | None:
    """The one failure of a write whose match identifier is unknown or has no value, if so."""
    if match not in ("email", "mobileNumber", "contactId"):
        return Failure(
            "invalidMatchIdentifier",
            f"The match identifier '{match}' is not a known identifier",
            "matchIdentifier",
        )
    if identifiers.get(match) in (None, ""):
        return Failure(
            "invalidMatchIdentifier",
            f"The match identifier '{match}' has no value in identifiers",
            "matchIdentifier",
        )
    return None


def identifier_failures(identifiers: dict[str, Any]) -> list[Failure]:
    failures: list[Failure] = []
    email = identifiers.get("email")
    if email is not None and not (isinstance(email, str) and EMAIL_RE.match(email.strip())):
        failures.append(Failure("invalidEmail", "Invalid value for 'email'", "email"))
    mobile = identifiers.get("mobileNumber")
    if mobile is not None and not (isinstance(mobile, str) and MOBILE_RE.match(mobile)):
        failures.append(
            Failure("invalidPhoneNumber", "Invalid value for 'mobileNumber'", "mobileNumber")
        )
    cid = identifiers.get("contactId")
    if cid is not None and not str(cid).isdigit():
        failures.append(Failure("invalidContactId", "Invalid value for 'contactId'", "contactId"))
    return failures


def channel_failures(item: dict[str, Any]) -> list[Failure]:
    channels = item.get("channelProperties") or {}
    if (
        not isinstance(channels, dict)
        or not all(
            isinstance(channels.get(name) or {}, dict) for name in ("email", "sms", "whatsApp")
        )
        or not isinstance((channels.get("email") or {}).get("resubscribeOptions") or {}, dict)
    ):
        return [
            Failure("apiSchemaViolation", "channelProperties is malformed", "channelProperties")
        ]
    return []


class WriteRules:
    """The account's data fields and lists, which each contact write is checked against."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.fields = data_field_types(db)
        self.field_names = {name.upper(): name for name in self.fields}
        self.lists = {
            row["id"]: bool(row["writable"]) for row in db.execute("SELECT id, writable FROM lists")
        }

    def validate(self, item: dict[str, Any], match: str) -> list[Failure]:
        identifiers = item.get("identifiers")
        if not isinstance(identifiers, dict):
            return [
                Failure("noValidIdentifiers", "No valid identifiers were supplied", "identifiers")
            ]
        refused = match_failure(identifiers, match)
        if refused is not None:
            return [refused]
        return [
            *identifier_failures(identifiers),
            *channel_failures(item),
            *self.field_failures(item),
            *self.list_failures(item),
        ]

    def field_failures(self, item: dict[str, Any]) -> list[Failure]:
        fields = item.get("dataFields") or {}
        if not isinstance(fields, dict):
            return [Failure("apiSchemaViolation", "dataFields must be an object", "dataFields")]
        failures: list[Failure] = []
        for key, value in fields.items():
            name = self.field_names.get(str(key).upper())
            if name is None:
                failures.append(
                    Failure(
                        "dataFieldNotFound",
                        f"The data field '{key}' does not exist. ERROR_DATAFIELD_NOTFOUND",
                        f"dataFields.{key}",
                    )
                )
                continue
            ok, _ = coerce_field(self.fields[name], value)
            if not ok:
                failures.append(
                    Failure(
                        "invalidDataFieldValue",
                        f"The value {json.dumps(value)} is not valid for the {self.fields[name]} "
                        f"data field '{name}'. ERROR_DATAFIELD_INVALID",
                        f"dataFields.{key}",
                    )
                )
        return failures

    def list_failures(self, item: dict[str, Any]) -> list[Failure]:
        lists = item.get("lists") or []
        if not isinstance(lists, list):
            lists = [lists]
        bad = [lid for lid in lists if not isinstance(lid, int) or not self.lists.get(lid)]
        if not bad:
            return []
        return [
            Failure(
                "invalidAddressBookIds",
                f"The list ids {bad} do not exist or cannot be written to",
                "lists",
            )
        ]
