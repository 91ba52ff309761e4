"""Insight data: collections whose schema is inferred on first write and then locked, and records."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from . import contacts
from .context import Ctx, Reply
from .errors import ApiError, detail
from .store import iso, parse_iso

NAME_RE = re.compile(r"^[-A-Za-z_][-A-Za-z0-9_]{1,255}$")
JSON_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
TIMESTAMP_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)
SCOPES = ("account", "contact")
TYPES = (
    "cartInsight",
    "catalog",
    "consentInsight",
    "custom",
    "easyEditorExtensions",
    "nostoEmailCampaigns",
    "orders",
    "productCategories",
    "webInsight",
    "wishList",
)
FRIENDLY = {
    "STRING": "String",
    "FLOAT": "Numeric",
    "BOOLEAN": "Boolean",
    "TIMESTAMP": "Date",
    "RECORD": "Object",
}
MAX_COLLECTIONS = 1000
MAX_NUMBER = 2**63 - 1


class RecordRejected(Exception):
    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass
class Limits:
    max_string: int = 1000
    max_key: int = 255


def friendly(node: dict[str, Any]) -> str:
    return "List" if node.get("mode") == "REPEATED" else FRIENDLY.get(node["type"], node["type"])


def infer(value: Any, name: str, limits: Limits) -> dict[str, Any] | None:
    """The schema node for one JSON value; None for null (it says nothing about the type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"type": "BOOLEAN"}
    if isinstance(value, int | float):
        if abs(value) > MAX_NUMBER:
            raise RecordRejected(
                "JsonNumberValueTooLarge", f"The number named '{name}' is too large"
            )
        return {"type": "FLOAT"}
    if isinstance(value, str):
        if len(value) > limits.max_string:
            raise RecordRejected(
                "JsonValueTooLong", f"The value named '{name}' is longer than {limits.max_string}"
            )
        return {"type": "TIMESTAMP" if TIMESTAMP_RE.match(value) else "STRING"}
    if isinstance(value, dict):
        return {"type": "RECORD", "fields": merge_fields({}, value, name, limits)}
    if isinstance(value, list):
        node: dict[str, Any] | None = None
        for element in value:
            if isinstance(element, list):
                raise RecordRejected(
                    "JsonContainsNestedArray", f"The array named '{name}' contains an array"
                )
            child = infer(element, name, limits)
            if child is not None:
                node = child if node is None else unify(node, child, name)
        if node is None:
            return None
        return {**node, "mode": "REPEATED"}
    raise RecordRejected("InvalidJson", f"The value named '{name}' is not JSON")


def unify(old: dict[str, Any], new: dict[str, Any], name: str) -> dict[str, Any]:
    """The locked node after seeing `new`; types are immutable, objects may gain fields."""
    if old.get("mode") != new.get("mode") or not (
        old["type"] == new["type"] or (old["type"] == "STRING" and new["type"] == "TIMESTAMP")
    ):
        raise RecordRejected(
            "JsonValueIncompatibleWithSchema",
            f"JsonValueIncompatibleWithSchema. A value named '{name}' of type {friendly(old)} "
            "already exists in this collection and new values must be of this type. "
            "ERROR_TRANSACTIONAL_DATA_VALIDATION_FAILED",
        )
    if old["type"] != "RECORD":
        return old
    merged = merge_node_fields(old["fields"], new["fields"], name)
    return old if merged is old["fields"] else {**old, "fields": merged}


def merge_node_fields(old: dict[str, Any], new: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = old
    for key, node in new.items():
        current = old.get(key)
        merged = node if current is None else unify(current, node, f"{prefix}.{key}".strip("."))
        if merged is not current:
            if out is old:
                out = dict(old)
            out[key] = merged
    return out


def merge_fields(
    schema: dict[str, Any], obj: dict[str, Any], prefix: str, limits: Limits
) -> dict[str, Any]:
    """`schema` extended by `obj`, or `schema` itself when nothing is new (copy on write)."""
    out = schema
    for key, value in obj.items():
        if not JSON_KEY_RE.match(key):
            raise RecordRejected(
                "JsonKeyInvalidCharacters",
                f"The key '{key}' contains characters other than A-Z, 0-9, _ and -",
            )
        if len(key) > limits.max_key:
            raise RecordRejected("JsonKeyTooLong", f"The key '{key[:40]}…' is too long")
        name = f"{prefix}.{key}" if prefix else key
        node = infer(value, name, limits)
        if node is None:
            continue
        current = out.get(key)
        merged = node if current is None else unify(current, node, name)
        if merged is not current:
            if out is schema:
                out = dict(schema)
            out[key] = merged
    return out


def schema_listing(fields: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, node in fields.items():
        entry: dict[str, Any] = {
            "name": name,
            "mode": node.get("mode", "NULLABLE"),
            "type": node["type"],
            "fields": [],
        }
        if node["type"] == "RECORD":
            entry["fields"] = schema_listing(node["fields"])
        out.append(entry)
    return out


def limits_of(ctx: Ctx) -> Limits:
    profile = ctx.app.profile
    return Limits(profile.insight_max_string, profile.insight_max_key)


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ApiError(
            400,
            code="insightData:invalidId",
            description=f"The collectionName value '{name}' is invalid",
        )


def collection(db: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM collections WHERE name = ?", (name,)
    ).fetchone()
    return row


def require_collection(db: sqlite3.Connection, name: str, scope: str | None = None) -> sqlite3.Row:
    check_name(name)
    row = collection(db, name)
    if row is None or (scope is not None and row["scope"] != scope):
        raise ApiError(
            404,
            code="insightData:collectionNotFound",
            description="The collection could not be found",
            details=[detail(name, "Not found")],
        )
    return row


def create_collection(db: sqlite3.Connection, name: str, scope: str, kind: str, now: float) -> None:
    count = db.execute("SELECT COUNT(*) FROM collections").fetchone()[0]
    if count >= MAX_COLLECTIONS:
        raise ApiError(
            412,
            code="insightData:collectionLimitExceeded",
            description="Insight data collection limit exceeded",
        )
    db.execute(
        "INSERT INTO collections (name, scope, type, schema, created) VALUES (?,?,?,?,?)",
        (name, scope, kind, "{}", now),
    )


# -- handlers ---------------------------------------------------------------------------------


def list_collections(ctx: Ctx) -> Reply:
    rows = ctx.db.execute(
        "SELECT c.name, c.scope, c.type, (SELECT COUNT(*) FROM records r "
        "WHERE r.collection = c.name) AS n FROM collections c ORDER BY c.name"
    ).fetchall()
    return Reply(
        200,
        [
            {
                "collectionName": r["name"],
                "collectionType": r["type"],
                "collectionScope": r["scope"],
                "recordCount": r["n"],
            }
            for r in rows
        ],
    )


def list_account_collections(ctx: Ctx) -> Reply:
    rows = ctx.db.execute(
        "SELECT c.name, c.type, (SELECT COUNT(*) FROM records r WHERE r.collection = c.name) "
        "AS n FROM collections c WHERE c.scope = 'account' ORDER BY c.name"
    ).fetchall()
    return Reply(
        200,
        [
            {
                "collectionName": r["name"],
                "collectionType": r["type"],
                "collectionScope": "account",
                "recordCount": r["n"],
            }
            for r in rows
        ],
    )


def delete_collection(ctx: Ctx, name: str) -> Reply:
    """DotDigital deletes asynchronously; the sandbox deletes at once and its job is Finished."""
    job_id = str(uuid.uuid4())
    with ctx.app.store.write(ctx.db):
        row = require_collection(ctx.db, name)
        ctx.db.execute("DELETE FROM records WHERE collection = ?", (row["name"],))
        ctx.db.execute("DELETE FROM collections WHERE name = ?", (row["name"],))
        ctx.db.execute(
            "INSERT INTO async_jobs (id, kind, status, created) VALUES (?, ?, 'Finished', ?)",
            (job_id, "deleteCollection", ctx.now),
        )
    return Reply(202, {"jobId": job_id})


def get_async_job(ctx: Ctx, job_id: str) -> Reply:
    row = ctx.db.execute("SELECT * FROM async_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise ApiError(
            404,
            code="insightData:asyncJobNotFound",
            description=f"The job ID '{job_id}' could not be found!",
        )
    return Reply(200, {"jobId": row["id"], "status": row["status"]})


def post_collection(ctx: Ctx, name: str) -> Reply:
    check_name(name)
    scope, kind = ctx.q("collectionScope"), ctx.q("collectionType")
    if scope not in SCOPES:
        raise ctx.bad_param("collectionScope", str(scope))
    if kind not in TYPES:
        raise ctx.bad_param("collectionType", str(kind))
    with ctx.app.store.write(ctx.db):
        if collection(ctx.db, name) is not None:
            return Reply(200)
        create_collection(ctx.db, name, scope, kind, ctx.now)
    return Reply(201)


def get_schema(ctx: Ctx, name: str) -> Reply:
    row = require_collection(ctx.db, name)
    fields = json.loads(row["schema"])
    return Reply(
        200,
        {
            "collectionName": row["name"],
            "collectionType": row["type"],
            "schema": schema_listing(fields),
        },
    )


def resolve_owner(db: sqlite3.Connection, identifier: str, value: str) -> int | None:
    row = contacts.find(db, identifier, value)
    return None if row is None else int(row["id"])


def contact_not_found(identifier: str, value: str) -> ApiError:
    return ApiError(
        404,
        code="insightData:contactNotFound",
        description="The following contacts could not be found",
        details=[detail(value, f"Not found using the identifier '{identifier}'")],
    )


def put_record(ctx: Ctx, name: str, key: str, owner: tuple[str, str] | None) -> Reply:
    doc = ctx.json()
    if not isinstance(doc, dict):
        raise ApiError(
            400,
            code="insightData:badJson",
            description="The request JSON is badly formed",
            details=[detail("body", "The record must be a JSON object")],
        )
    if not key or len(key) > ctx.app.profile.insight_max_key:
        raise ApiError(
            400, code="insightData:invalidId", description=f"The recordId value '{key}' is invalid"
        )
    db = ctx.db
    with ctx.app.store.write(db):
        row = require_collection(db, name, "contact" if owner else "account")
        contact_id = None
        if owner is not None:
            contact_id = resolve_owner(db, *owner)
            if contact_id is None:
                raise contact_not_found(*owner)
        existing = db.execute(
            "SELECT contact_id FROM records WHERE collection = ? AND key = ?", (row["name"], key)
        ).fetchone()
        if existing is not None and existing["contact_id"] != contact_id:
            raise ApiError(
                400,
                code="insightData:validationFailed",
                description="DuplicateKey. The key already exists for a different "
                "contact in this collection",
                details=[detail(key, "DuplicateKey")],
            )
        schema = json.loads(row["schema"])
        try:
            new_schema = merge_fields(schema, doc, "", limits_of(ctx))
        except RecordRejected as exc:
            raise ApiError(
                400,
                code="insightData:validationFailed",
                description=exc.text,
                details=[detail(key, exc.reason)],
            ) from None
        if new_schema is not schema:
            db.execute(
                "UPDATE collections SET schema = ? WHERE name = ?",
                (json.dumps(new_schema), row["name"]),
            )
        now = ctx.now
        db.execute(
            "INSERT INTO records (collection, key, contact_id, json, created, updated) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (collection, key) DO UPDATE SET "
            "json = excluded.json, updated = excluded.updated",
            (row["name"], key, contact_id, json.dumps(doc), now, now),
        )
    return Reply(201 if existing is None else 204)


def render_record(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": row["key"],
        "json": json.loads(row["json"]),
        "created": iso(row["created"]),
        "updated": iso(row["updated"]),
    }
    if row["contact_id"] is not None:
        out["ownerContactId"] = row["contact_id"]
    return out


def record_not_found(name: str, key: str) -> ApiError:
    return ApiError(
        404,
        code="insightData:recordNotFound",
        description="The Insight data record could not be found",
        details=[detail(key, f"Not found in the collection '{name}'")],
    )


def get_record(ctx: Ctx, name: str, key: str, owner: tuple[str, str] | None) -> Reply:
    row = require_collection(ctx.db, name, "contact" if owner else "account")
    contact_id = None
    if owner is not None:
        contact_id = resolve_owner(ctx.db, *owner)
        if contact_id is None:
            raise contact_not_found(*owner)
    rec = ctx.db.execute(
        "SELECT * FROM records WHERE collection = ? AND key = ? AND contact_id IS ?",
        (row["name"], key, contact_id),
    ).fetchone()
    if rec is None:
        raise record_not_found(name, key)
    return Reply(200, render_record(rec))


def delete_record(ctx: Ctx, name: str, key: str, owner: tuple[str, str] | None) -> Reply:
    db = ctx.db
    with ctx.app.store.write(db):
        row = require_collection(db, name, "contact" if owner else "account")
        contact_id = None
        if owner is not None:
            contact_id = resolve_owner(db, *owner)
            if contact_id is None:
                raise contact_not_found(*owner)
        cur = db.execute(
            "DELETE FROM records WHERE collection = ? AND key = ? AND contact_id IS ?",
            (row["name"], key, contact_id),
        )
    if cur.rowcount == 0:
        raise record_not_found(name, key)
    return Reply(204)


def list_records(ctx: Ctx, name: str, owner: tuple[str, str] | None) -> Reply:
    row = require_collection(ctx.db, name, "contact" if owner else "account")
    where, args = ["collection = ?"], [row["name"]]
    if owner is not None:
        contact_id = resolve_owner(ctx.db, *owner)
        if contact_id is None:
            raise contact_not_found(*owner)
        where.append("contact_id = ?")
        args.append(contact_id)
    raw = ctx.q("~modified")
    if raw:
        if not raw.startswith("gte::"):
            raise ctx.bad_param("~modified", raw)
        try:
            where.append("updated >= ?")
            args.append(parse_iso(raw[5:]))
        except ValueError:
            raise ctx.bad_param("~modified", raw) from None
    limit = ctx.q_int("limit", 1000, 1, 5000 if owner else 1000)
    marker = ctx.q("marker") or ""
    if marker:
        where.append("key > ?")
        args.append(marker)
    rows = ctx.db.execute(
        f"SELECT * FROM records WHERE {' AND '.join(where)} ORDER BY key LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    base = f"{ctx.app.base_url}{ctx.path}"
    params = {k: v[0] for k, v in ctx.query.items() if k != "marker"}

    def link(mark: str) -> dict[str, str]:
        query = {**params, "marker": mark} if mark else params
        return {"link": f"{base}?{urlencode(query)}" if query else base, "marker": mark}

    links: dict[str, Any] = {"self": link(marker), "first": link("")}
    if more:
        links["next"] = link(rows[-1]["key"])
    return Reply(200, {"_items": [render_record(r) for r in rows], "_links": links})
