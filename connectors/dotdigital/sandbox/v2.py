"""The v2 surface still in use: account info, data fields, lists, suppressions, programs."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from typing import Any

from . import contact_rules, contact_writer
from .context import Ctx, Reply
from .errors import v2
from .store import iso, parse_iso, row_dict

FIELD_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,20}$")
FIELD_TYPES = ("String", "Numeric", "Date", "Boolean")
VISIBILITIES = ("Private", "Public")


def account_info(ctx: Ctx) -> Reply:
    endpoint = ctx.app.account.get("api_endpoint") or ctx.app.base_url
    props = [
        ("Name", "String", "Syncdesk sandbox"),
        ("MainEmail", "String", "sandbox@emailsim.io"),
        ("ApiEndpoint", "String", endpoint),
        ("APILocale", "String", "en-GB"),
        ("AvailableEmailSendsCredits", "Int", "100000"),
    ]
    return Reply(
        200, {"id": 1, "properties": [{"name": n, "type": t, "value": v} for n, t, v in props]}
    )


def server_time(ctx: Ctx) -> Reply:
    return Reply(200, iso(ctx.now))


# -- data fields ------------------------------------------------------------------------------


def field_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "type": row["type"],
        "visibility": row["visibility"],
        "defaultValue": json.loads(row["default_value"]),
    }


def list_data_fields(ctx: Ctx) -> Reply:
    rows = ctx.db.execute("SELECT * FROM data_fields ORDER BY system DESC, name").fetchall()
    return Reply(200, [field_json(r) for r in rows])


def create_data_field(ctx: Ctx) -> Reply:
    body = {k.lower(): v for k, v in ctx.json_object().items()}
    name, kind = body.get("name"), body.get("type")
    visibility = body.get("visibility") or "Private"
    if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
        raise v2(400, "ERROR_DATAFIELD_INVALID", "Data field name is invalid.")
    if kind not in FIELD_TYPES:
        raise v2(400, "ERROR_DATAFIELD_INVALID", "Data field type is invalid.")
    if visibility not in VISIBILITIES:
        raise v2(400, "ERROR_PARAMETER_INVALID", "Visibility is invalid.")
    default = body.get("defaultvalue")
    ok, stored = contact_rules.coerce_field(kind, default)
    if not ok:
        raise v2(400, "ERROR_DATAFIELD_INVALID", "Default value does not match the field type.")
    name = name.upper()
    with ctx.app.store.write(ctx.db):
        if ctx.db.execute("SELECT 1 FROM data_fields WHERE name = ?", (name,)).fetchone():
            raise v2(400, "ERROR_NON_UNIQUE_DATAFIELD", "Field already exists.")
        ctx.db.execute(
            "INSERT INTO data_fields (name, type, visibility, default_value) VALUES (?,?,?,?)",
            (name, kind, visibility, json.dumps(stored)),
        )
    return Reply(
        201, {"name": name, "type": kind, "visibility": visibility, "defaultValue": stored}
    )


def delete_data_field(ctx: Ctx, name: str) -> Reply:
    with ctx.app.store.write(ctx.db):
        row = ctx.db.execute("SELECT * FROM data_fields WHERE name = ?", (name.upper(),)).fetchone()
        if row is None:
            raise v2(404, "ERROR_DATAFIELD_NOTFOUND", "Data field not found.")
        if row["system"]:
            return Reply(
                200,
                {"result": False, "dependencies": [f"{row['name']} is a reserved system field"]},
            )
        ctx.db.execute("DELETE FROM data_fields WHERE name = ?", (row["name"],))
    return Reply(200, {"result": True, "dependencies": None})


# -- lists (address books) --------------------------------------------------------------------


def is_int32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def list_json(db: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    count = db.execute(
        "SELECT COUNT(*) FROM list_members WHERE list_id = ?", (row["id"],)
    ).fetchone()[0]
    return {
        "id": row["id"],
        "name": row["name"],
        "visibility": row["visibility"],
        "contacts": count,
    }


def list_address_books(ctx: Ctx) -> Reply:
    select = ctx.q_int("select", 1000, 1, 1000)
    skip = ctx.q_int("skip", 0, 0, 10**9)
    rows = ctx.db.execute(
        "SELECT * FROM lists ORDER BY id LIMIT ? OFFSET ?", (select, skip)
    ).fetchall()
    return Reply(200, [list_json(ctx.db, r) for r in rows])


def get_address_book(ctx: Ctx, list_id: str) -> Reply:
    row = ctx.db.execute("SELECT * FROM lists WHERE id = ?", (int(list_id),)).fetchone()
    if row is None:
        raise v2(404, "ERROR_ADDRESSBOOK_NOT_FOUND")
    return Reply(200, list_json(ctx.db, row))


def create_address_book(ctx: Ctx) -> Reply:
    body = {k.lower(): v for k, v in ctx.json_object().items()}
    name = body.get("name")
    visibility = body.get("visibility") or "Private"
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise v2(400, "ERROR_ADDRESSBOOK_INVALID", "Address book name is invalid.")
    if visibility not in VISIBILITIES:
        raise v2(400, "ERROR_PARAMETER_INVALID", "Visibility is invalid.")
    for key in ("id", "contacts"):
        # The address book's own read-only numbers: ignored, but they must still be Int32s.
        if key in body and not is_int32(body[key]):
            raise v2(400, "ERROR_PARAMETER_INVALID", f"The value for {key} is invalid.")
    if name.strip().lower() in ("test", "all contacts"):
        raise v2(
            400, "ERROR_ADDRESSBOOK_DUPLICATE", "That name is reserved, please choose another."
        )
    with ctx.app.store.write(ctx.db):
        if ctx.db.execute("SELECT 1 FROM lists WHERE name = ?", (name,)).fetchone():
            raise v2(
                400,
                "ERROR_ADDRESSBOOK_DUPLICATE",
                "That name is in use already, please choose another.",
            )
        cur = ctx.db.execute(
            "INSERT INTO lists (name, visibility, created) VALUES (?,?,?)",
            (name, visibility, ctx.now),
        )
        row = ctx.db.execute("SELECT * FROM lists WHERE id = ?", (cur.lastrowid,)).fetchone()
    return Reply(201, list_json(ctx.db, row))


def delete_address_book(ctx: Ctx, list_id: str) -> Reply:
    """204 without a body, as DotDigital's Lists document declares; members leave with the list."""
    with ctx.app.store.write(ctx.db):
        row = ctx.db.execute("SELECT * FROM lists WHERE id = ?", (int(list_id),)).fetchone()
        if row is None:
            raise v2(404, "ERROR_ADDRESSBOOK_NOT_FOUND")
        if not row["writable"]:
            raise v2(
                400,
                "ERROR_ADDRESSBOOK_NOTWRITABLE",
                "Address book cannot be written to via the API.",
            )
        ctx.db.execute(
            "UPDATE contacts SET updated = ? WHERE id IN "
            "(SELECT contact_id FROM list_members WHERE list_id = ?)",
            (ctx.now, row["id"]),
        )
        ctx.db.execute("DELETE FROM list_members WHERE list_id = ?", (row["id"],))
        ctx.db.execute("DELETE FROM lists WHERE id = ?", (row["id"],))
    return Reply(204)


def remove_from_address_book(ctx: Ctx, list_id: str, contact_id: str) -> Reply:
    with ctx.app.store.write(ctx.db):
        row = ctx.db.execute("SELECT * FROM lists WHERE id = ?", (int(list_id),)).fetchone()
        if row is None:
            raise v2(404, "ERROR_ADDRESSBOOK_NOT_FOUND")
        if not row["writable"]:
            raise v2(
                400,
                "ERROR_ADDRESSBOOK_NOTWRITABLE",
                "Address book cannot be written to via the API.",
            )
        if (
            ctx.db.execute("SELECT 1 FROM contacts WHERE id = ?", (int(contact_id),)).fetchone()
            is None
        ):
            raise v2(404, "ERROR_CONTACT_NOT_FOUND")
        ctx.db.execute(
            "DELETE FROM list_members WHERE list_id = ? AND contact_id = ?",
            (int(list_id), int(contact_id)),
        )
        ctx.db.execute("UPDATE contacts SET updated = ? WHERE id = ?", (ctx.now, int(contact_id)))
    return Reply(204)


# -- suppressions -----------------------------------------------------------------------------


def v2_contact(row: dict[str, Any]) -> dict[str, Any]:
    status = contact_rules.STATUS_TO_REASON.get(row["email_status"], "Subscribed")
    if row["email_status"] == "pendingOptIn":
        status = "PendingOptIn"
    return {
        "id": row["id"],
        "email": row["email"] or "",
        "optInType": row["opt_in_type"],
        "emailType": row["email_type"],
        "dataFields": None,
        "status": status,
    }


def suppressed_since(ctx: Ctx, date: str) -> Reply:
    try:
        since = parse_iso(date)
    except ValueError:
        raise v2(400, "ERROR_PARAMETER_INVALID", f"The date '{date}' is not valid.") from None
    select = ctx.q_int("select", 1000, 1, 1000)
    skip = ctx.q_int("skip", 0, 0, 10**9)
    rows = ctx.db.execute(
        "SELECT s.reason, s.date_removed, c.* FROM suppressions s JOIN contacts c "
        "ON c.id = s.contact_id WHERE s.date_removed >= ? ORDER BY s.date_removed, s.contact_id "
        "LIMIT ? OFFSET ?",
        (since, select, skip),
    ).fetchall()
    return Reply(200, [suppression_json(row_dict(r), r["reason"], r["date_removed"]) for r in rows])


def suppression_json(row: dict[str, Any], reason: str, when: float) -> dict[str, Any]:
    return {"suppressedContact": v2_contact(row), "dateRemoved": iso(when), "reason": reason}


def unsubscribe(ctx: Ctx) -> Reply:
    body = {k.lower(): v for k, v in ctx.json_object().items()}
    email = body.get("email")
    if not isinstance(email, str) or not contact_rules.EMAIL_RE.match(email.strip()):
        raise v2(400, "ERROR_PARAMETER_INVALID", "Email is not a valid email address.")
    with ctx.app.store.write(ctx.db):
        writer = contact_writer.ContactWriter(ctx.db, ctx.now, "overwrite")
        (outcome,) = writer.apply(
            [
                {
                    "matchIdentifier": "email",
                    "identifiers": {"email": email},
                    "channelProperties": {"email": {"status": "unsubscribed"}},
                }
            ],
            single=True,
        )
        row = outcome.contact
        assert row is not None
        supp = ctx.db.execute(
            "SELECT * FROM suppressions WHERE contact_id = ?", (row["id"],)
        ).fetchone()
    reason = supp["reason"] if supp else "Unsubscribed"
    when = supp["date_removed"] if supp else ctx.now
    return Reply(200, suppression_json(row, reason, when))


# -- programs ---------------------------------------------------------------------------------


def program_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "dateCreated": iso(row["created"]),
    }


def list_programs(ctx: Ctx) -> Reply:
    select = ctx.q_int("select", 1000, 1, 1000)
    # The programs document declares skip's minimum as 1 (absent is the first page).
    skip = ctx.q_int("skip", 0, 1, 10**9)
    rows = ctx.db.execute(
        "SELECT * FROM programs ORDER BY id LIMIT ? OFFSET ?", (select, skip)
    ).fetchall()
    return Reply(200, [program_json(r) for r in rows])


def get_program(ctx: Ctx, program_id: str) -> Reply:
    row = ctx.db.execute("SELECT * FROM programs WHERE id = ?", (int(program_id),)).fetchone()
    if row is None:
        raise v2(404, "ERROR_PROGRAM_NOT_FOUND")
    return Reply(200, program_json(row))


def enrolment_json(row: sqlite3.Row, now: float) -> dict[str, Any]:
    return {
        "id": row["id"],
        "programId": row["program_id"],
        "status": "Finished" if now - row["created"] >= 1 else "Processing",
        "dateCreated": iso(row["created"]),
        "contacts": json.loads(row["contacts"]),
        "addressBooks": json.loads(row["address_books"]),
    }


def enrol(ctx: Ctx) -> Reply:
    body = {k.lower(): v for k, v in ctx.json_object().items()}
    program_id = body.get("programid")
    ids = body.get("contacts") or []
    books = body.get("addressbooks") or []
    if not isinstance(program_id, int) or not isinstance(ids, list) or not isinstance(books, list):
        raise v2(400, "ERROR_ENROLMENT_INVALID", "The enrolment is invalid.")
    if not ids and not books:
        raise v2(400, "ERROR_ENROLMENT_INVALID", "Nothing to enrol.")
    if len(books) > 10:
        raise v2(400, "ERROR_ADDRESSBOOK_TOOMANY", "Too many address books.")
    db = ctx.db
    with ctx.app.store.write(db):
        program = db.execute("SELECT * FROM programs WHERE id = ?", (program_id,)).fetchone()
        if program is None:
            raise v2(404, "ERROR_PROGRAM_NOT_FOUND")
        if program["status"] != "Active":
            raise v2(422, "ERROR_PROGRAM_NOT_ACTIVE")
        now = ctx.now
        used = db.execute(
            "SELECT COUNT(*) FROM enrolments WHERE created > ?", (now - 3600,)
        ).fetchone()[0]
        if used >= ctx.app.profile.enrolments_per_hour:
            raise v2(
                400,
                "ERROR_ENROLMENT_ALLOWANCE_EXCEEDED",
                f"You have reached the limit of {ctx.app.profile.enrolments_per_hour} calls "
                "per hour for creating program enrolments across all programs.",
            )
        for cid in ids:
            if (
                not isinstance(cid, int)
                or db.execute("SELECT 1 FROM contacts WHERE id = ?", (cid,)).fetchone() is None
            ):
                raise v2(400, "ERROR_CONTACT_NOT_FOUND", f"Contact {cid} was not found.")
        for lid in books:
            if (
                not isinstance(lid, int)
                or db.execute("SELECT 1 FROM lists WHERE id = ?", (lid,)).fetchone() is None
            ):
                raise v2(400, "ERROR_ADDRESSBOOK_NOT_FOUND", f"Address book {lid} was not found.")
        enrolment_id = str(uuid.uuid4())
        db.execute(
            "INSERT INTO enrolments (id, program_id, contacts, address_books, created) "
            "VALUES (?,?,?,?,?)",
            (enrolment_id, program_id, json.dumps(ids), json.dumps(books), now),
        )
        db.executemany(
            "INSERT INTO enrolment_contacts (enrolment_id, program_id, contact_id) VALUES (?,?,?)",
            [(enrolment_id, program_id, cid) for cid in ids],
        )
        row = db.execute("SELECT * FROM enrolments WHERE id = ?", (enrolment_id,)).fetchone()
    ctx.note.update({"enrolment_id": enrolment_id, "records": len(ids)})
    return Reply(201, enrolment_json(row, now))


def get_enrolment(ctx: Ctx, enrolment_id: str) -> Reply:
    row = ctx.db.execute("SELECT * FROM enrolments WHERE id = ?", (enrolment_id,)).fetchone()
    if row is None:
        raise v2(404, "ERROR_ENROLMENT_NOT_FOUND")
    return Reply(200, enrolment_json(row, ctx.now))
