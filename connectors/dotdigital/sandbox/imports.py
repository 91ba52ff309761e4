"""Asynchronous contact and insight imports.

An import is stored with its payload at submission and applied, set-based in one transaction,
the first time anything looks after its finish time (`settle`). Status is computed from
timestamps, so a restart mid-import changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from . import contact_rules, contact_writer, insight
from .context import Ctx, Reply
from .errors import ApiError, detail
from .store import CHUNK, Store

CONTACTS, INSIGHT = "contacts", "insight"


def in_flight(db: sqlite3.Connection, kind: str, now: float) -> int:
    return int(
        db.execute(
            "SELECT COUNT(*) FROM imports WHERE kind = ? AND finish_at > ?", (kind, now)
        ).fetchone()[0]
    )


def submit(ctx: Ctx, kind: str, payload: dict[str, Any], count: int, collection: str | None) -> str:
    profile = ctx.app.profile
    cap = profile.max_contact_imports if kind == CONTACTS else profile.max_insight_imports
    db = ctx.db
    with ctx.app.store.write(db):
        now = ctx.now
        active = in_flight(db, kind, now)
        if active >= cap:
            if kind == CONTACTS:
                raise ApiError(
                    429,
                    code="contacts:tooManyActiveImports",
                    description="Your import request cannot be accepted as too many "
                    "imports are being processed for you account. Please "
                    "wait for an import to complete and then resubmit.",
                )
            raise ApiError(
                429,
                code="insightData:tooManyActiveImports",
                description=f"Your import request cannot be accepted as {cap} insight "
                "data imports are already being processed for your "
                "account. Please wait for one to complete and resubmit.",
            )
        import_id = str(uuid.uuid4())
        finish = now + profile.import_base_s + count * profile.import_per_record_ms / 1000
        db.execute(
            "INSERT INTO imports (id, kind, submitted, finish_at, records, payload, collection, "
            "api_user) VALUES (?,?,?,?,?,?,?,?)",
            (import_id, kind, now, finish, count, json.dumps(payload), collection, ctx.api_user),
        )
        peak_key = f"peak_in_flight_{kind}"
        in_flight_now = active + (1 if finish > now else 0)
        if in_flight_now > int(Store.get_meta(db, peak_key, 0)):
            Store.set_meta(db, peak_key, in_flight_now)
    ctx.note.update({"import_id": import_id, "import_kind": kind, "records": count})
    return import_id


def settle(store: Store, db: sqlite3.Connection, limits: insight.Limits) -> int:
    """Apply every import whose finish time has passed, oldest first; returns how many."""
    now = store.now()
    due = db.execute(
        "SELECT id FROM imports WHERE applied = 0 AND finish_at <= ? ORDER BY finish_at, submitted",
        (now,),
    ).fetchall()
    for (import_id,) in due:
        with store.write(db):
            row = db.execute(
                "SELECT * FROM imports WHERE id = ? AND applied = 0", (import_id,)
            ).fetchone()
            if row is None:
                continue
            payload = json.loads(row["payload"])
            apply = apply_contacts if row["kind"] == CONTACTS else apply_insight
            db.execute("SAVEPOINT apply_import")
            try:
                result = apply(db, payload, row["finish_at"], limits)
                db.execute("RELEASE apply_import")
            except Exception:
                # A sandbox bug must not wedge the queue: the import fails, nothing of it lands.
                traceback.print_exc(file=sys.stderr)
                db.execute("ROLLBACK TO apply_import")
                db.execute("RELEASE apply_import")
                result = {"failed": True}
            db.execute(
                "UPDATE imports SET applied = 1, payload = NULL, result = ? WHERE id = ?",
                (json.dumps(result), import_id),
            )
    return len(due)


# -- contacts ---------------------------------------------------------------------------------


def put_contact_import(ctx: Ctx) -> Reply:
    body = ctx.json()
    if not isinstance(body, dict) or not isinstance(body.get("contacts"), list):
        raise ApiError(
            400,
            code="contacts:badJson",
            description="The request JSON is badly formed",
            details=[detail("contacts", "contacts must be a non-empty array")],
        )
    items = body["contacts"]
    if not items:
        raise ApiError(
            400,
            code="contacts:badJson",
            description="The request JSON is badly formed",
            details=[detail("contacts", "At least one contact is required")],
        )
    option = body.get("mergeOption", "overwrite")
    if option not in ("overwrite", "overwriteIfNotEmpty", "overwriteIfEmpty"):
        raise ApiError(
            400,
            code="contacts:badJson",
            description="The request JSON is badly formed",
            details=[detail("mergeOption", f"'{option}' is not a valid merge option")],
        )
    import_id = submit(ctx, CONTACTS, body, len(items), None)
    return Reply(202, {"importId": import_id})


def apply_contacts(
    db: sqlite3.Connection, payload: dict[str, Any], now: float, limits: insight.Limits
) -> dict[str, Any]:
    items = [c if isinstance(c, dict) else {} for c in payload["contacts"]]
    option = contact_rules.MERGE_OPTIONS[str(payload.get("mergeOption", "overwrite")).lower()]
    writer = contact_writer.ContactWriter(db, now, option)
    outcomes = writer.apply(items)
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    summary = {
        "newContacts": 0,
        "updatedContacts": 0,
        "globallySuppressed": 0,
        "invalidEntries": 0,
        "duplicateIdentifiers": 0,
    }
    for outcome in outcomes:
        item = outcome.request
        if outcome.contact is not None and outcome.kind in ("created", "updated"):
            ref = {
                "contactId": outcome.contact["id"],
                "identifiers": reference_identifiers(outcome.contact),
            }
            (created if outcome.kind == "created" else updated).append(ref)
            summary["newContacts" if outcome.kind == "created" else "updatedContacts"] += 1
        elif outcome.failures:
            code = outcome.failures[0].code
            if code == "globallySuppressed":
                summary["globallySuppressed"] += 1
            elif code == "duplicateIdentifier":
                summary["duplicateIdentifiers"] += 1
            else:
                summary["invalidEntries"] += 1
        if outcome.failures:
            entry: dict[str, Any] = {
                "matchIdentifier": str(item.get("matchIdentifier") or "email")[:50] or "email",
                "identifiers": safe_identifiers(item.get("identifiers")),
                "failures": [
                    {"failureCode": f.code, "description": f.description} for f in outcome.failures
                ],
            }
            if outcome.contact is not None:
                entry["contactId"] = outcome.contact["id"]
            failures.append(entry)
    return {"summary": summary, "created": created, "updated": updated, "failures": failures}


def reference_identifiers(row: dict[str, Any]) -> dict[str, str]:
    out = {}
    if row.get("email"):
        out["email"] = row["email"]
    if row.get("mobile"):
        out["mobileNumber"] = row["mobile"]
    return out


def safe_identifiers(value: Any) -> dict[str, Any]:
    """The identifiers as sent, typed as the spec types them (contactId an integer)."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "contactId" and str(item).isdigit():
            out[key] = int(item)
        elif key != "contactId":
            out[str(key)] = str(item)
    return out


def get_contact_import(ctx: Ctx, import_id: str) -> Reply:
    row = load(ctx, import_id, CONTACTS)
    body: dict[str, Any] = {"importId": row["id"]}
    if not row["applied"]:
        body["status"] = "NotFinished"
        return Reply(200, body)
    result = json.loads(row["result"])
    if result.pop("failed", False):
        return Reply(200, {**body, "status": "Failed"})
    body.update({"status": "Finished", **result})
    return Reply(200, body)


def load(ctx: Ctx, import_id: str, kind: str) -> sqlite3.Row:
    settle(ctx.app.store, ctx.db, insight.limits_of(ctx))
    row: sqlite3.Row | None = ctx.db.execute(
        "SELECT * FROM imports WHERE id = ? AND kind = ?", (import_id, kind)
    ).fetchone()
    if row is None:
        service = "contacts" if kind == CONTACTS else "insightData"
        raise ApiError(
            404,
            code=f"{service}:importNotFound",
            description=f"The import request '{import_id}' could not be found!",
        )
    return row


# -- insight ----------------------------------------------------------------------------------


def put_insight_import(ctx: Ctx) -> Reply:
    body = ctx.json()

    def bad(item: str, text: str) -> ApiError:
        return ApiError(
            400,
            code="insightData:badJson",
            description="The request JSON is badly formed",
            details=[detail(item, text)],
        )

    if not isinstance(body, dict):
        raise bad("body", "Expected a JSON object")
    name = body.get("collectionName")
    if not isinstance(name, str):
        raise bad("collectionName", "collectionName is required")
    insight.check_name(name)
    scope, kind = body.get("collectionScope"), body.get("collectionType")
    if scope not in insight.SCOPES:
        raise bad("collectionScope", "collectionScope must be account or contact")
    if kind not in insight.TYPES:
        raise bad("collectionType", f"'{kind}' is not a collection type")
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise ApiError(
            400,
            code="insightData:noRecordsSpecified",
            description="No records were specified",
            details=[detail("records", "Empty")],
        )
    existing = insight.collection(ctx.db, name)
    if existing is not None and existing["scope"] != scope:
        raise bad(
            "collectionScope", f"The collection '{name}' exists with scope '{existing['scope']}'"
        )
    import_id = submit(ctx, INSIGHT, body, len(records), name)
    return Reply(202, {"importId": import_id})


def apply_insight(
    db: sqlite3.Connection, payload: dict[str, Any], now: float, limits: insight.Limits
) -> dict[str, Any]:
    name, scope = payload["collectionName"], payload["collectionScope"]
    row = insight.collection(db, name)
    if row is None:
        insight.create_collection(db, name, scope, payload["collectionType"], now)
        row = insight.collection(db, name)
    assert row is not None
    name = row["name"]
    schema = json.loads(row["schema"])
    original = schema
    records = payload["records"]
    owners = resolve_owners(db, records) if scope == "contact" else {}
    keys = [str(r.get("key")) for r in records if isinstance(r, dict) and r.get("key") is not None]
    existing_owner: dict[str, int | None] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        for rec in db.execute(
            f"SELECT key, contact_id FROM records WHERE collection = ? AND key IN ({marks})",
            [name, *chunk],
        ):
            existing_owner[rec["key"]] = rec["contact_id"]
    failures, upserts, seen = [], {}, set()
    for record in records:
        try:
            key, contact_id, doc = check_record(record, scope, owners, limits)
            if key in seen:
                raise insight.RecordRejected("DuplicateKey", f"The key '{key}' appears twice")
            seen.add(key)
            if key in existing_owner and existing_owner[key] != contact_id:
                raise insight.RecordRejected(
                    "DuplicateKey", f"The key '{key}' exists for a different contact"
                )
            schema = insight.merge_fields(schema, doc, "", limits)
        except insight.RecordRejected as exc:
            failures.append(failure_entry(record, scope, exc))
            continue
        upserts[key] = (name, key, contact_id, json.dumps(doc), now, now)
    if schema is not original:
        db.execute("UPDATE collections SET schema = ? WHERE name = ?", (json.dumps(schema), name))
    db.executemany(
        "INSERT INTO records (collection, key, contact_id, json, created, updated) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT (collection, key) DO UPDATE SET "
        "json = excluded.json, updated = excluded.updated",
        list(upserts.values()),
    )
    result: dict[str, Any] = {
        "collectionName": name,
        "summary": {
            "totalRecords": len(records),
            "totalImported": len(upserts),
            "totalRejected": len(failures),
        },
    }
    if failures:
        result["failures"] = failures
    return result


def resolve_owners(db: sqlite3.Connection, records: list[Any]) -> dict[tuple[str, str], int]:
    wanted: dict[str, set[str]] = {"email": set(), "contactId": set(), "mobileNumber": set()}
    for record in records:
        identity = record.get("contactIdentity") if isinstance(record, dict) else None
        if isinstance(identity, dict) and identity.get("identifier") in wanted:
            wanted[identity["identifier"]].add(str(identity.get("value") or ""))
    found: dict[tuple[str, str], int] = {}
    columns = {"email": "email", "contactId": "id", "mobileNumber": "mobile"}
    normalisers: dict[str, Callable[[str], str]] = {
        "email": lambda v: v.strip().lower(),
        "mobileNumber": lambda v: v.lstrip("+"),
        "contactId": lambda v: v,
    }
    for identifier, values in wanted.items():
        norm = normalisers[identifier]
        listed = sorted({norm(v) for v in values})
        for start in range(0, len(listed), CHUNK):
            chunk = listed[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, {columns[identifier]} AS v FROM contacts WHERE {columns[identifier]} IN ({marks})"
            for row in db.execute(sql, chunk):
                found[(identifier, str(row["v"]))] = int(row["id"])
    return found


def check_record(
    record: Any, scope: str, owners: dict[tuple[str, str], int], limits: insight.Limits
) -> tuple[str, int | None, dict[str, Any]]:
    if not isinstance(record, dict):
        raise insight.RecordRejected("InvalidJson", "The record is not a JSON object")
    key = record.get("key")
    if (
        isinstance(key, bool)
        or not isinstance(key, str | int)
        or str(key) == ""
        or (len(str(key)) > limits.max_key)
    ):
        raise insight.RecordRejected("InvalidClientKey", f"The key {json.dumps(key)} is invalid")
    doc = record.get("json")
    if not isinstance(doc, dict):
        raise insight.RecordRejected("InvalidJson", "The record's json must be an object")
    contact_id = None
    if scope == "contact":
        identity = record.get("contactIdentity")
        if not isinstance(identity, dict) or not identity.get("value"):
            raise insight.RecordRejected(
                "InvalidContactIdentifier", "contactIdentity is required for a contact collection"
            )
        identifier, value = identity.get("identifier"), str(identity["value"])
        norm = value.strip().lower() if identifier == "email" else value.lstrip("+")
        contact_id = owners.get((str(identifier), norm))
        if contact_id is None:
            reason = {
                "email": "ContactEmailDoesNotExist",
                "contactId": "ContactIdDoesNotExist",
            }.get(str(identifier), "InvalidContactIdentifier")
            raise insight.RecordRejected(reason, value)
    return str(key), contact_id, doc


def failure_entry(record: Any, scope: str, exc: insight.RecordRejected) -> dict[str, Any]:
    record = record if isinstance(record, dict) else {}
    owner: dict[str, Any] = {"ownerType": scope}
    identity = record.get("contactIdentity")
    if scope == "contact" and isinstance(identity, dict):
        owner["contactIdentity"] = {
            "identifier": str(identity.get("identifier", "")),
            "value": None if identity.get("value") is None else str(identity.get("value")),
        }
    doc = record.get("json")
    return {
        "collectionOwner": owner,
        "failureReason": exc.reason,
        "details": [exc.text],
        "key": str(record.get("key", "")),
        "json": doc if isinstance(doc, dict) else {},
    }


def get_insight_import(ctx: Ctx, import_id: str) -> Reply:
    row = load(ctx, import_id, INSIGHT)
    body: dict[str, Any] = {"importId": row["id"]}
    if not row["applied"]:
        # In flight: "Processing" is in the published enum (see the client's status handling).
        body.update({"status": "Processing", "collectionName": row["collection"]})
        return Reply(200, body)
    result = json.loads(row["result"])
    if result.pop("failed", False):
        return Reply(200, {**body, "status": "Failed", "collectionName": row["collection"]})
    body.update({"status": "Finished", **result})
    return Reply(200, body)
