"""Contacts: the shared write path (single PATCH and bulk import), data-field typing, v3 reads."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .context import Ctx, Reply
from .errors import ApiError, detail
from .store import iso, parse_iso

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
TOP_LEVEL = {"subscribed", "unsubscribed", "pendingOptIn", "deleted", "binned", "noSubscription"}
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
COUNTRY_PREFIXES = (
    ("44", "GB"),
    ("353", "IE"),
    ("1", "US"),
    ("61", "AU"),
    ("49", "DE"),
    ("33", "FR"),
    ("31", "NL"),
)
MERGE_OPTIONS = {
    "overwrite": "overwrite",
    "overwriteifnotempty": "ifNotEmpty",
    "overwrite-if-not-empty": "ifNotEmpty",
    "overwriteifempty": "ifEmpty",
    "overwrite-if-empty": "ifEmpty",
}
CONSENT_KEYS = ("text", "dateTimeConsented", "url", "ipAddress", "userAgent")
CHUNK = 500


@dataclass
class Failure:
    code: str
    description: str
    item: str = ""


@dataclass
class Outcome:
    """What happened to one contact of a write batch."""

    index: int
    request: dict[str, Any]
    kind: str = "failed"  # created | updated | unchanged | failed
    contact: dict[str, Any] | None = None
    failures: list[Failure] = field(default_factory=list)
    conflict: bool = False


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


def is_empty(value: Any) -> bool:
    return value is None or value == ""


def merge_value(option: str, old: Any, new: Any) -> Any:
    if option == "ifNotEmpty":
        return old if is_empty(new) else new
    if option == "ifEmpty":
        return new if is_empty(old) else old
    return new


def country_code(mobile: str) -> str:
    digits = mobile.lstrip("+")
    for prefix, code in COUNTRY_PREFIXES:
        if digits.startswith(prefix):
            return code
    return "GB"


def top_status(row: dict[str, Any]) -> str:
    status = row["email_status"] if row.get("email") else row["sms_status"]
    if status in TOP_LEVEL:
        return status
    if status in GLOBALLY_SUPPRESSED:
        return "suppressed"
    return "subscribed" if status == "softBounced" else "noSubscription"


def list_status(row: dict[str, Any]) -> str:
    status = row["email_status"]
    if status == "subscribed" or status == "softBounced":
        return "subscribed"
    return "pending" if status == "pendingOptIn" else "suppressed"


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["data"] = json.loads(out["data"])
    out["consent"] = json.loads(out["consent"])
    return out


def render(
    db: sqlite3.Connection,
    row: dict[str, Any],
    fields: Iterable[str] | None = None,
    include: Iterable[str] = ("channelProperties", "lists", "consentRecords"),
) -> dict[str, Any]:
    """The v3 contact object. `fields` None means every account data field."""
    identifiers: dict[str, Any] = {}
    if row.get("email"):
        identifiers["email"] = row["email"]
    if row.get("mobile"):
        identifiers["mobileNumber"] = row["mobile"]
    out: dict[str, Any] = {
        "contactId": row["id"],
        "status": top_status(row),
        "created": iso(row["created"]),
        "updated": iso(row["updated"]),
        "identifiers": identifiers,
    }
    names = list(data_field_types(db)) if fields is None else list(fields)
    if names:
        out["dataFields"] = {name: row["data"].get(name) for name in names}
    include = set(include)
    if "channelProperties" in include:
        channels: dict[str, Any] = {}
        if row.get("email"):
            channels["email"] = {
                "emailType": row["email_type"],
                "optInType": row["opt_in_type"],
                "status": row["email_status"],
            }
        if row.get("mobile"):
            channels["sms"] = {
                "countryCode": country_code(row["mobile"]),
                "status": row["sms_status"],
            }
        out["channelProperties"] = channels
    if "lists" in include:
        out["lists"] = [
            {"id": lst["id"], "name": lst["name"], "status": list_status(row)}
            for lst in db.execute(
                "SELECT l.id, l.name FROM list_members m JOIN lists l ON l.id = m.list_id "
                "WHERE m.contact_id = ? ORDER BY l.id",
                (row["id"],),
            )
        ]
    if "consentRecords" in include and row["consent"]:
        out["consentRecords"] = row["consent"]
    return out


def find(db: sqlite3.Connection, identifier: str, value: str) -> dict[str, Any] | None:
    arg: str | int | None
    if identifier == "email":
        sql, arg = "SELECT * FROM contacts WHERE email = ?", normalise_email(value)
    elif identifier == "mobileNumber":
        sql, arg = "SELECT * FROM contacts WHERE mobile = ?", value.lstrip("+")
    elif identifier == "contactId":
        if not value.isdigit():
            return None
        sql, arg = "SELECT * FROM contacts WHERE id = ?", int(value)
    else:
        return None
    row = db.execute(sql, (arg,)).fetchone()
    return row_dict(row) if row else None


def check_identifier(identifier: str, value: str) -> None:
    """400 contacts:invalidId for a path identifier/value the sandbox cannot accept."""
    ok = {
        "email": lambda v: bool(EMAIL_RE.match(v)),
        "mobileNumber": lambda v: bool(MOBILE_RE.match(v)),
        "contactId": lambda v: v.isdigit(),
    }.get(identifier)
    if ok is None:
        raise ApiError(
            400,
            code="contacts:invalidIdentifier",
            description=f"The identifier '{identifier}' is not a valid identifier",
            details=[detail("identifier", "Unknown identifier")],
        )
    if not ok(value):
        raise ApiError(
            400,
            code="contacts:invalidId",
            description=f"The id value '{value}' is invalid for the identifier '{identifier}'",
        )


class ContactWriter:
    """Applies a batch of contact writes set-based: validate, look up, merge, then executemany."""

    def __init__(self, db: sqlite3.Connection, now: float, merge_option: str) -> None:
        self.db = db
        self.now = now
        self.merge = merge_option
        self.fields = data_field_types(db)
        self.field_names = {name.upper(): name for name in self.fields}
        self.lists = {
            row["id"]: bool(row["writable"]) for row in db.execute("SELECT id, writable FROM lists")
        }
        self.by_email: dict[str, dict[str, Any]] = {}
        self.by_mobile: dict[str, dict[str, Any]] = {}
        self.by_id: dict[int, dict[str, Any]] = {}
        self.next_id = (
            int(db.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()[0]) + 1
        )
        self.suppress: dict[int, str] = {}
        self.unsuppress: set[int] = set()
        self.challenges: list[int] = []
        self.memberships: list[tuple[int, int]] = []

    # -- validation ---------------------------------------------------------------------------

    def validate(self, item: dict[str, Any], match: str) -> list[Failure]:
        failures: list[Failure] = []
        identifiers = item.get("identifiers")
        if not isinstance(identifiers, dict):
            return [
                Failure("noValidIdentifiers", "No valid identifiers were supplied", "identifiers")
            ]
        if match not in ("email", "mobileNumber", "contactId"):
            return [
                Failure(
                    "invalidMatchIdentifier",
                    f"The match identifier '{match}' is not a known identifier",
                    "matchIdentifier",
                )
            ]
        if identifiers.get(match) in (None, ""):
            return [
                Failure(
                    "invalidMatchIdentifier",
                    f"The match identifier '{match}' has no value in identifiers",
                    "matchIdentifier",
                )
            ]
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
            failures.append(
                Failure("invalidContactId", "Invalid value for 'contactId'", "contactId")
            )
        channels = item.get("channelProperties") or {}
        if (
            not isinstance(channels, dict)
            or not all(
                isinstance(channels.get(name) or {}, dict) for name in ("email", "sms", "whatsApp")
            )
            or not isinstance((channels.get("email") or {}).get("resubscribeOptions") or {}, dict)
        ):
            failures.append(
                Failure("apiSchemaViolation", "channelProperties is malformed", "channelProperties")
            )
        fields = item.get("dataFields") or {}
        if not isinstance(fields, dict):
            failures.append(
                Failure("apiSchemaViolation", "dataFields must be an object", "dataFields")
            )
            fields = {}
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
        lists = item.get("lists") or []
        if not isinstance(lists, list):
            lists = [lists]
        bad = [lid for lid in lists if not isinstance(lid, int) or not self.lists.get(lid)]
        if bad:
            failures.append(
                Failure(
                    "invalidAddressBookIds",
                    f"The list ids {bad} do not exist or cannot be written to",
                    "lists",
                )
            )
        return failures

    @staticmethod
    def consent_ok(item: dict[str, Any]) -> bool:
        records = item.get("consentRecords")
        if records is None:
            return True
        return (
            isinstance(records, list)
            and 1 <= len(records) <= 5
            and all(isinstance(r, dict) and all(r.get(k) for k in CONSENT_KEYS) for r in records)
        )

    # -- lookups ------------------------------------------------------------------------------

    def preload(self, items: list[dict[str, Any]]) -> None:
        emails, mobiles, ids = set(), set(), set()
        for item in items:
            identifiers = item.get("identifiers")
            if not isinstance(identifiers, dict):
                continue
            if isinstance(identifiers.get("email"), str):
                emails.add(normalise_email(identifiers["email"]))
            if isinstance(identifiers.get("mobileNumber"), str):
                mobiles.add(identifiers["mobileNumber"].lstrip("+"))
            if str(identifiers.get("contactId", "")).isdigit():
                ids.add(int(identifiers["contactId"]))
        for column, values in (("email", emails), ("mobile", mobiles), ("id", ids)):
            values_list = list(values)
            for start in range(0, len(values_list), CHUNK):
                chunk = values_list[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in self.db.execute(
                    f"SELECT * FROM contacts WHERE {column} IN ({marks})",
                    chunk,
                ):
                    self.remember(row_dict(row))

    def remember(self, row: dict[str, Any]) -> None:
        self.by_id[row["id"]] = row
        if row.get("email"):
            self.by_email[row["email"]] = row
        if row.get("mobile"):
            self.by_mobile[row["mobile"]] = row

    def forget(self, row: dict[str, Any]) -> None:
        if row.get("email") and self.by_email.get(row["email"]) is row:
            del self.by_email[row["email"]]
        if row.get("mobile") and self.by_mobile.get(row["mobile"]) is row:
            del self.by_mobile[row["mobile"]]

    def lookup(self, identifier: str, value: Any) -> dict[str, Any] | None:
        if identifier == "email":
            return self.by_email.get(normalise_email(value) or "")
        if identifier == "mobileNumber":
            return self.by_mobile.get(str(value).lstrip("+"))
        if identifier == "contactId" and str(value).isdigit():
            return self.by_id.get(int(value))
        return None

    # -- the write ----------------------------------------------------------------------------

    def apply(self, items: list[dict[str, Any]], *, single: bool = False) -> list[Outcome]:
        self.preload(items)
        outcomes: list[Outcome] = []
        seen: set[tuple[str, str]] = set()
        dirty: dict[int, dict[str, Any]] = {}
        created: set[int] = set()
        for index, item in enumerate(items):
            match = str(item.get("matchIdentifier") or "")
            outcome = Outcome(index, item)
            outcomes.append(outcome)
            outcome.failures = self.validate(item, match)
            if outcome.failures:
                continue
            identifiers = item["identifiers"]
            key = (match, str(identifiers[match]).strip().lower())
            if key in seen:
                outcome.failures = [
                    Failure(
                        "duplicateIdentifier",
                        f"Duplicate identifier detected for {match} '{identifiers[match]}'",
                        match,
                    )
                ]
                continue
            seen.add(key)
            existing = self.lookup(match, identifiers[match])
            if existing is None and match == "contactId":
                outcome.failures = [
                    Failure(
                        "invalidContactId", "No contact exists with that contactId", "contactId"
                    )
                ]
                continue
            conflict = self.identifier_conflict(identifiers, existing)
            if conflict:
                outcome.conflict = True
                outcome.failures = [Failure("duplicateIdentifier", conflict, "identifiers")]
                continue
            if (
                existing is not None
                and existing["email_status"] in GLOBALLY_SUPPRESSED
                and (not single)
            ):
                outcome.failures = [
                    Failure(
                        "globallySuppressed",
                        "The contact is suppressed and cannot be updated",
                        "identifiers",
                    )
                ]
                continue
            if existing is None:
                if not identifiers.get("email") and not identifiers.get("mobileNumber"):
                    outcome.failures = [
                        Failure(
                            "noValidIdentifiers",
                            "A new contact needs an email or mobileNumber",
                            "identifiers",
                        )
                    ]
                    continue
                row = self.new_row()
                created.add(row["id"])
                outcome.kind = "created"
            else:
                row = existing
                outcome.kind = "updated"
            if row["email_status"] in GLOBALLY_SUPPRESSED:
                # A single PATCH answers with the contact as it is; nothing changes.
                outcome.contact = row
                outcome.kind = "unchanged"
                continue
            self.forget(row)
            self.write_fields(row, item, created=row["id"] in created)
            if not self.consent_ok(item):
                outcome.failures.append(
                    Failure(
                        "consentRecordsNotApplied",
                        "The provided consent records could not be applied as they were "
                        "incorrectly formatted",
                        "consentRecords",
                    )
                )
            elif item.get("consentRecords"):
                stamp = iso(self.now)
                row["consent"] = row["consent"] + [
                    {**{k: r[k] for k in CONSENT_KEYS}, "dateTimeCreated": stamp}
                    for r in item["consentRecords"]
                ]
            for lid in item.get("lists") or []:
                self.memberships.append((lid, row["id"]))
            row["updated"] = self.now
            self.remember(row)
            dirty[row["id"]] = row
            outcome.contact = row
        self.flush(dirty, created)
        return outcomes

    def identifier_conflict(self, identifiers: dict[str, Any], row: dict[str, Any] | None) -> str:
        for name in ("email", "mobileNumber"):
            value = identifiers.get(name)
            if not value:
                continue
            other = self.lookup(name, value)
            if other is not None and (row is None or other["id"] != row["id"]):
                return (
                    f"The id value '{value}' for the identifier '{name}' already exists. "
                    "All identifiers must be unique!"
                )
        return ""

    def new_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.next_id,
            "email": None,
            "mobile": None,
            "email_status": "noSubscription",
            "email_type": "Html",
            "opt_in_type": "Unknown",
            "sms_status": "noSubscription",
            "data": {},
            "consent": [],
            "created": self.now,
            "updated": self.now,
        }
        self.next_id += 1
        return row

    def write_fields(self, row: dict[str, Any], item: dict[str, Any], *, created: bool) -> None:
        identifiers = item["identifiers"]
        if identifiers.get("email"):
            row["email"] = normalise_email(identifiers["email"])
        if identifiers.get("mobileNumber"):
            row["mobile"] = str(identifiers["mobileNumber"]).lstrip("+")
        option = "overwrite" if created else self.merge
        data = dict(row["data"])
        for key, value in (item.get("dataFields") or {}).items():
            name = self.field_names[str(key).upper()]
            _, stored = coerce_field(self.fields[name], value)
            merged = merge_value(option, data.get(name), stored)
            if merged is None:
                data.pop(name, None)
            else:
                data[name] = merged
        row["data"] = data
        channels = item.get("channelProperties") or {}
        email_props = channels.get("email") or {} if isinstance(channels, dict) else {}
        sms_props = channels.get("sms") or {} if isinstance(channels, dict) else {}
        if isinstance(email_props.get("emailType"), str):
            row["email_type"] = EMAIL_TYPES.get(email_props["emailType"].lower(), row["email_type"])
        if isinstance(email_props.get("optInType"), str):
            row["opt_in_type"] = OPT_IN_TYPES.get(
                email_props["optInType"].lower(), row["opt_in_type"]
            )
        if row.get("email"):
            resubscribe = email_props.get("resubscribeOptions") or {}
            no_challenge = resubscribe.get("resubscribeWithNoChallenge", True) is not False
            self.email_status(
                row, email_props.get("status"), created=created, no_challenge=no_challenge
            )
        if row.get("mobile") and isinstance(sms_props.get("status"), str):
            row["sms_status"] = sms_props["status"]

    def email_status(
        self, row: dict[str, Any], requested: str | None, *, created: bool, no_challenge: bool
    ) -> None:
        current = (
            None if created or row["email_status"] == "noSubscription" else row["email_status"]
        )
        double = row["opt_in_type"] in ("Double", "VerifiedDouble")
        if current is None:
            if requested in (None, "subscribed"):
                row["email_status"] = "pendingOptIn" if double else "subscribed"
            else:
                row["email_status"] = requested
                self.suppress[row["id"]] = STATUS_TO_REASON.get(requested, "Suppressed")
            return
        if requested is None or requested == current:
            return
        if requested in ("unsubscribed", "suppressed"):
            row["email_status"] = requested
            self.suppress[row["id"]] = STATUS_TO_REASON[requested]
            self.unsuppress.discard(row["id"])
            return
        if requested == "subscribed" and current in ("unsubscribed", "pendingOptIn", "softBounced"):
            if current == "softBounced" or no_challenge:
                row["email_status"] = "subscribed"
                self.unsuppress.add(row["id"])
                self.suppress.pop(row["id"], None)
            else:
                # DotDigital mails a resubscription challenge; the opt-out stands until answered.
                row["email_status"] = "pendingOptIn"
                self.challenges.append(row["id"])

    def flush(self, dirty: dict[int, dict[str, Any]], created: set[int]) -> None:
        rows = [
            (
                r["id"],
                r["email"],
                r["mobile"],
                r["email_status"],
                r["email_type"],
                r["opt_in_type"],
                r["sms_status"],
                json.dumps(r["data"]),
                json.dumps(r["consent"]),
                r["created"],
                r["updated"],
            )
            for r in dirty.values()
        ]
        inserts = [r for r in rows if r[0] in created]
        updates = [r for r in rows if r[0] not in created]
        # Identifiers may move between rows within one batch: clear them before re-setting.
        if updates:
            self.db.executemany(
                "UPDATE contacts SET email = NULL, mobile = NULL WHERE id = ?",
                [(r[0],) for r in updates],
            )
        self.db.executemany(
            "INSERT INTO contacts (id, email, mobile, email_status, email_type, opt_in_type, "
            "sms_status, data, consent, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            inserts,
        )
        self.db.executemany(
            "UPDATE contacts SET email = ?, mobile = ?, email_status = ?, email_type = ?, "
            "opt_in_type = ?, sms_status = ?, data = ?, consent = ?, updated = ? WHERE id = ?",
            [(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[10], r[0]) for r in updates],
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO list_members (list_id, contact_id, status) "
            "VALUES (?, ?, 'subscribed')",
            self.memberships,
        )
        self.db.executemany(
            "INSERT INTO suppressions (contact_id, reason, date_removed) VALUES (?, ?, ?) "
            "ON CONFLICT (contact_id) DO UPDATE SET reason = excluded.reason, "
            "date_removed = excluded.date_removed",
            [(cid, reason, self.now) for cid, reason in self.suppress.items()],
        )
        self.db.executemany(
            "DELETE FROM suppressions WHERE contact_id = ?", [(cid,) for cid in self.unsuppress]
        )
        self.db.executemany(
            "INSERT INTO challenges (contact_id, ts) VALUES (?, ?)",
            [(cid, self.now) for cid in self.challenges],
        )


# -- v3 handlers ------------------------------------------------------------------------------


def not_found(identifier: str, value: str) -> ApiError:
    return ApiError(
        404,
        code="contacts:contactNotFound",
        description="The following contacts could not be found",
        details=[detail(value, f"Not found using the identifier '{identifier}'")],
    )


def patch_contact(ctx: Ctx, identifier: str, value: str) -> Reply:
    check_identifier(identifier, value)
    raw_option = ctx.q("merge-option", "overwrite") or "overwrite"
    if raw_option not in ("overwrite", "overwrite-if-not-empty", "overwrite-if-empty"):
        raise ctx.bad_param("merge-option", raw_option)
    body = ctx.json_object()
    body_ids = body.get("identifiers") or {}
    if not isinstance(body_ids, dict):
        raise ApiError(
            400, code="contacts:invalidIdentifiers", description="identifiers must be an object"
        )
    if not ContactWriter.consent_ok(body):
        raise ApiError(
            400,
            code="contacts:invalidConsentRecords",
            description="Consent records must each carry text, dateTimeConsented, "
            "url, ipAddress and userAgent",
            details=[detail("consentRecords", "Incomplete consent record")],
        )
    db = ctx.db
    with ctx.app.store.write(db):
        existing = find(db, identifier, value)
        if existing is not None:
            # Match the found contact by id, so identifiers in the body may rename it.
            ids = {**body_ids, "contactId": existing["id"]}
            item = {**body, "identifiers": ids, "matchIdentifier": "contactId"}
        elif identifier == "contactId":
            raise not_found(identifier, value)
        else:
            item = {
                **body,
                "identifiers": {**body_ids, identifier: value},
                "matchIdentifier": identifier,
            }
        writer = ContactWriter(db, ctx.now, MERGE_OPTIONS[raw_option])
        (outcome,) = writer.apply([item], single=True)
    if outcome.conflict:
        raise ApiError(
            409, code="contacts:idAlreadyExists", description=outcome.failures[0].description
        )
    if outcome.contact is None:
        first = outcome.failures[0]
        if first.code in ("invalidEmail", "invalidPhoneNumber"):
            name = "email" if first.code == "invalidEmail" else "mobileNumber"
            raise ApiError(
                400,
                code="contacts:invalidId",
                description=f"The id value '{item['identifiers'].get(name)}' is "
                f"invalid for the identifier '{name}'",
            )
        raise ApiError(
            400,
            code=f"contacts:{first.code}",
            description=first.description,
            details=[detail(f.item, f.description) for f in outcome.failures],
        )
    status = 201 if outcome.kind == "created" else 200
    return Reply(status, render(db, outcome.contact))


def get_contact(ctx: Ctx, identifier: str, value: str) -> Reply:
    check_identifier(identifier, value)
    row = find(ctx.db, identifier, value)
    if row is None:
        raise not_found(identifier, value)
    return Reply(200, render(ctx.db, row))


def delete_contact(ctx: Ctx, identifier: str, value: str) -> Reply:
    check_identifier(identifier, value)
    db = ctx.db
    with ctx.app.store.write(db):
        row = find(db, identifier, value)
        if row is None:
            raise not_found(identifier, value)
        for sql in (
            "DELETE FROM contacts WHERE id = ?",
            "DELETE FROM list_members WHERE contact_id = ?",
            "DELETE FROM records WHERE contact_id = ?",
            "DELETE FROM suppressions WHERE contact_id = ?",
        ):
            db.execute(sql, (row["id"],))
    return Reply(200, {"contactId": row["id"]})


def encode_marker(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode()


def decode_marker(marker: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(marker.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return int(text[3:]) if text.startswith("id:") and text[3:].isdigit() else None


def date_filter(ctx: Ctx, name: str) -> float | None:
    raw = ctx.q(name)
    if raw is None:
        return None
    if not raw.startswith("gte::"):
        raise ApiError(
            400,
            code="contacts:invalidFilter",
            description=f"The filter '{name}' value '{raw}' is invalid",
            details=[detail(name, "Expected gte::<ISO 8601 date>")],
        )
    try:
        return parse_iso(raw[5:])
    except ValueError:
        raise ApiError(
            400,
            code="contacts:invalidFilter",
            description=f"The filter '{name}' value '{raw}' is invalid",
            details=[detail(name, "Expected gte::<ISO 8601 date>")],
        ) from None


def list_contacts(ctx: Ctx) -> Reply:
    if ctx.q("~modified") and ctx.q("~created"):
        raise ApiError(
            400,
            code="contacts:invalidFilter",
            description="~created and ~modified cannot be combined",
        )
    modified, created = date_filter(ctx, "~modified"), date_filter(ctx, "~created")
    limit = ctx.q_int("limit", 1000, 1, 5000)
    marker = ctx.q("marker")
    after = 0
    if marker:
        decoded = decode_marker(marker)
        if decoded is None:
            raise ctx.bad_param("marker", marker)
        after = decoded
    where: list[str] = ["id > ?"]
    args: list[Any] = [after]
    if modified is not None:
        where.append("updated >= ?")
        args.append(modified)
    if created is not None:
        where.append("created >= ?")
        args.append(created)
    list_id = ctx.q("~listId")
    if list_id:
        if not list_id.isdigit():
            raise ctx.bad_param("~listId", list_id)
        where.append("id IN (SELECT contact_id FROM list_members WHERE list_id = ?)")
        args.append(int(list_id))
    rows = ctx.db.execute(
        f"SELECT * FROM contacts WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    wanted = [f for f in (ctx.q("data-fields") or "").split("|") if f]
    fields = list(data_field_types(ctx.db)) if wanted == ["[[ALL]]"] else wanted
    include = [i for i in (ctx.q("include") or "").split("|") if i]
    items = [render(ctx.db, row_dict(r), fields, include) for r in rows]
    base = f"{ctx.app.base_url}/contacts/v3"
    params = {k: v[0] for k, v in ctx.query.items() if k != "marker"}

    def link(mark: str) -> dict[str, str]:
        query = {**params, "marker": mark} if mark else params
        return {"link": f"{base}?{urlencode(query)}" if query else base, "marker": mark}

    links: dict[str, Any] = {"self": link(marker or ""), "first": link("")}
    if more:
        links["next"] = link(encode_marker(rows[-1]["id"]))
    return Reply(200, {"_items": items, "_links": links})
