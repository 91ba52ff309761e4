"""Contacts over v3: PATCH, GET and DELETE one contact, list them, and the v3 contact object.

Writes go through `contact_writer.ContactWriter`, the path imports share; the checks each write
must pass are in `contact_rules`.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from .contact_rules import (
    EMAIL_RE,
    GLOBALLY_SUPPRESSED,
    MERGE_OPTIONS,
    MOBILE_RE,
    consent_ok,
    data_field_types,
    normalise_email,
)
from .contact_writer import ContactWriter, Outcome
from .context import Ctx, Reply
from .errors import ApiError, detail
from .store import iso, parse_iso, row_dict

TOP_LEVEL = {"subscribed", "unsubscribed", "pendingOptIn", "deleted", "binned", "noSubscription"}
COUNTRY_PREFIXES = (
    ("44", "GB"),
    ("353", "IE"),
    ("1", "US"),
    ("61", "AU"),
    ("49", "DE"),
    ("33", "FR"),
    ("31", "NL"),
)


def country_code(mobile: str) -> str:
    digits = mobile.lstrip("+")
    for prefix, code in COUNTRY_PREFIXES:
        if digits.startswith(prefix):
            return code
    return "GB"


def top_status(row: dict[str, Any]) -> str:
    status: str = row["email_status"] if row.get("email") else row["sms_status"]
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
    checks: dict[str, Callable[[str], bool]] = {
        "email": lambda v: bool(EMAIL_RE.match(v)),
        "mobileNumber": lambda v: bool(MOBILE_RE.match(v)),
        "contactId": lambda v: v.isdigit(),
    }
    ok = checks.get(identifier)
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
    body = request_body(ctx, identifiers_required=False)
    body_ids = body.get("identifiers") or {}
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
        outcome = write_one(db, ctx.now, item, MERGE_OPTIONS[raw_option])
    assert outcome.contact is not None
    status = 201 if outcome.kind == "created" else 200
    return Reply(status, render(db, outcome.contact))


def write_one(db: sqlite3.Connection, now: float, item: dict[str, Any], option: str) -> Outcome:
    """One contact written as a single call does; a refused write raises its v3 error."""
    (outcome,) = ContactWriter(db, now, option).apply([item], single=True)
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
    return outcome


def request_body(ctx: Ctx, *, identifiers_required: bool) -> dict[str, Any]:
    """The contact in a v3 write body, its identifiers an object and its consent complete."""
    body = ctx.json_object()
    if identifiers_required and "identifiers" not in body:
        raise ApiError(
            400,
            code="contacts:noValidIdentifiers",
            description="No valid identifiers were supplied",
            details=[detail("identifiers", "Required")],
        )
    if not isinstance(body.get("identifiers") or {}, dict):
        raise ApiError(
            400, code="contacts:invalidIdentifiers", description="identifiers must be an object"
        )
    if not consent_ok(body):
        raise ApiError(
            400,
            code="contacts:invalidConsentRecords",
            description="Consent records must each carry text, dateTimeConsented, "
            "url, ipAddress and userAgent",
            details=[detail("consentRecords", "Incomplete consent record")],
        )
    return body


def create_contact(ctx: Ctx) -> Reply:
    """POST /contacts/v3: a new contact, or 409 when any identifier is already in use."""
    body = request_body(ctx, identifiers_required=True)
    ids = body["identifiers"] or {}
    if "contactId" in ids:
        raise ApiError(
            400,
            code="contacts:invalidIdentifiers",
            description="A contactId is assigned by Dotdigital and cannot be set",
            details=[detail("identifiers.contactId", "Not allowed")],
        )
    match = "email" if ids.get("email") else "mobileNumber"
    db = ctx.db
    with ctx.app.store.write(db):
        for name in ("email", "mobileNumber"):
            value = ids.get(name)
            if isinstance(value, str) and find(db, name, value) is not None:
                raise ApiError(
                    409,
                    code="contacts:idAlreadyExists",
                    description=f"The id value '{value}' for the identifier '{name}' already "
                    "exists. All identifiers must be unique!",
                )
        outcome = write_one(db, ctx.now, {**body, "matchIdentifier": match}, "overwrite")
    assert outcome.contact is not None
    return Reply(201, render(db, outcome.contact))


def replace_contact(ctx: Ctx, identifier: str, value: str) -> Reply:
    """PUT: the contact becomes what the body says; data fields and lists it leaves out are
    cleared. Identifiers it leaves out are kept (**inferred**: a contact keeps its identity)."""
    check_identifier(identifier, value)
    body = request_body(ctx, identifiers_required=True)
    db = ctx.db
    with ctx.app.store.write(db):
        existing = find(db, identifier, value)
        if existing is None:
            raise not_found(identifier, value)
        fields = body.get("dataFields") or {}
        if isinstance(fields, dict):
            # Every field the body leaves out is cleared; a malformed value fails validation.
            fields = {**dict.fromkeys(data_field_types(db)), **fields}
        item = {
            **body,
            "identifiers": {**(body["identifiers"] or {}), "contactId": existing["id"]},
            "matchIdentifier": "contactId",
            "dataFields": fields,
        }
        outcome = write_one(db, ctx.now, item, "overwrite")
        lists = body.get("lists") or []
        lists = lists if isinstance(lists, list) else [lists]
        marks = ",".join("?" * len(lists))
        db.execute(
            f"DELETE FROM list_members WHERE contact_id = ? AND list_id NOT IN ({marks})",
            [existing["id"], *lists],
        )
    assert outcome.contact is not None
    return Reply(200, render(db, outcome.contact))


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


INCLUDES = ("channelProperties", "lists", "preferences", "consentRecords")


def included(ctx: Ctx) -> list[str]:
    """The `include` data sets; a name outside the documented enum is a bad parameter."""
    raw = ctx.q("include") or ""
    names = [i for i in raw.split("|") if i]
    unknown = [i for i in names if i not in INCLUDES]
    if unknown:
        raise ApiError(
            400,
            code="contacts:invalidParameter",
            description=f"The value '{raw}' is invalid for 'include'",
            details=[detail("include", f"'{unknown[0]}' is not one of {', '.join(INCLUDES)}")],
        )
    return names


def int_filter(ctx: Ctx, name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) > 2**31 - 1:
        raise ctx.bad_param(name, raw)
    return int(raw)


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
    list_id, segment_id = ctx.q("~listId"), ctx.q("~segmentId")
    if list_id is not None and segment_id is not None:
        raise ApiError(
            400,
            code="contacts:invalidFilter",
            description="~listId and ~segmentId cannot be combined",
        )
    if list_id is not None:
        where.append("id IN (SELECT contact_id FROM list_members WHERE list_id = ?)")
        args.append(int_filter(ctx, "~listId", list_id))
    if segment_id is not None:
        # The sandbox has no segments: a well-formed segment id matches no contact.
        int_filter(ctx, "~segmentId", segment_id)
        where.append("0")
    rows = ctx.db.execute(
        f"SELECT * FROM contacts WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    wanted = [f for f in (ctx.q("data-fields") or "").split("|") if f]
    fields = list(data_field_types(ctx.db)) if wanted == ["[[ALL]]"] else wanted
    include = included(ctx)
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
