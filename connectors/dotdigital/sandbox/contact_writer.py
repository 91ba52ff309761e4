"""The one write path of contacts: a batch of writes applied set-based, as DotDigital would.

A v3 PATCH is a batch of one, a v3 import a batch of up to its size, a v2 unsubscribe a batch of
one that sets the email status. Each item is checked (`contact_rules`), matched to its contact
(looked up for the whole batch at once), merged, and every change is written by `flush` in a few
`executemany` calls; suppressions and resubscription challenges follow the email status.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from .contact_rules import (
    CONSENT_KEYS,
    EMAIL_TYPES,
    GLOBALLY_SUPPRESSED,
    OPT_IN_TYPES,
    STATUS_TO_REASON,
    Failure,
    WriteRules,
    coerce_field,
    consent_ok,
    normalise_email,
)
from .store import CHUNK, iso, row_dict


@dataclass
class Outcome:
    """What happened to one contact of a write batch."""

    index: int
    request: dict[str, Any]
    kind: str = "failed"  # created | updated | unchanged | failed
    contact: dict[str, Any] | None = None
    failures: list[Failure] = field(default_factory=list)
    conflict: bool = False


def is_empty(value: Any) -> bool:
    return value is None or value == ""


def merge_value(option: str, old: Any, new: Any) -> Any:
    if option == "ifNotEmpty":
        return old if is_empty(new) else new
    if option == "ifEmpty":
        return new if is_empty(old) else old
    return new


class ContactWriter:
    """Applies a batch of contact writes set-based: validate, look up, merge, then executemany."""

    def __init__(self, db: sqlite3.Connection, now: float, merge_option: str) -> None:
        self.db = db
        self.now = now
        self.merge = merge_option
        self.rules = WriteRules(db)
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
        """Write `items` in one go; an outcome per item. `single` is a PATCH, not an import."""
        self.preload(items)
        outcomes: list[Outcome] = []
        seen: set[tuple[str, str]] = set()
        dirty: dict[int, dict[str, Any]] = {}
        created: set[int] = set()
        for index, item in enumerate(items):
            outcome = Outcome(index, item)
            outcomes.append(outcome)
            row = self.target(outcome, seen, created, single=single)
            if row is None:
                continue
            if row["email_status"] in GLOBALLY_SUPPRESSED:
                # A single PATCH answers with the contact as it is; nothing changes.
                outcome.contact = row
                outcome.kind = "unchanged"
                continue
            self.write(outcome, row, created)
            dirty[row["id"]] = row
        self.flush(dirty, created)
        return outcomes

    def target(
        self, outcome: Outcome, seen: set[tuple[str, str]], created: set[int], *, single: bool
    ) -> dict[str, Any] | None:
        """The row `outcome`'s item writes to (a new one if need be); None when it is refused."""
        item = outcome.request
        match = str(item.get("matchIdentifier") or "")
        outcome.failures = self.rules.validate(item, match)
        if outcome.failures:
            return None
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
            return None
        seen.add(key)
        existing = self.lookup(match, identifiers[match])
        if existing is None and match == "contactId":
            outcome.failures = [
                Failure("invalidContactId", "No contact exists with that contactId", "contactId")
            ]
            return None
        conflict = self.identifier_conflict(identifiers, existing)
        if conflict:
            outcome.conflict = True
            outcome.failures = [Failure("duplicateIdentifier", conflict, "identifiers")]
            return None
        if existing is not None and existing["email_status"] in GLOBALLY_SUPPRESSED and not single:
            outcome.failures = [
                Failure(
                    "globallySuppressed",
                    "The contact is suppressed and cannot be updated",
                    "identifiers",
                )
            ]
            return None
        if existing is not None:
            outcome.kind = "updated"
            return existing
        if not identifiers.get("email") and not identifiers.get("mobileNumber"):
            outcome.failures = [
                Failure(
                    "noValidIdentifiers",
                    "A new contact needs an email or mobileNumber",
                    "identifiers",
                )
            ]
            return None
        row = self.new_row()
        created.add(row["id"])
        outcome.kind = "created"
        return row

    def write(self, outcome: Outcome, row: dict[str, Any], created: set[int]) -> None:
        """Merge `outcome`'s item into `row`: fields, channels, consent records and lists."""
        item = outcome.request
        self.forget(row)
        self.write_fields(row, item, created=row["id"] in created)
        if not consent_ok(item):
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
        outcome.contact = row

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
            name = self.rules.field_names[str(key).upper()]
            _, stored = coerce_field(self.rules.fields[name], value)
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
