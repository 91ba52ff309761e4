"""The /_sandbox/ control surface: loopback only, no DotDigital auth.

GET  /_sandbox/                 HTML page of the state
GET  /_sandbox/health           {"ok": true, "profile": name}
POST /_sandbox/reset            wipe the state (optionally {"profile": <name or settings>})
GET|POST /_sandbox/profile      {"name": "realistic"} or {"base": "fast", "import_base_s": 5, ...}
GET|POST /_sandbox/faults       {"seed": 1, "match": "/contacts/v3/import", "methods": ["PUT"],
                                 "latency_ms": 0, "error_rate": 0.0, "error_burst": 0,
                                 "error_status": 503, "rate_limit_rate": 0.0,
                                 "rate_limit_burst": 0, "hang_rate": 0.0, "hang_burst": 0,
                                 "hang_seconds": 130, "drop_rate": 0.0, "drop_burst": 0,
                                 "drop_after_processing": false, "crash_rate": 0.0,
                                 "crash_burst": 0}; every key optional, a POST replaces the
                                 whole set, {} clears; a burst hits the next N matching calls
GET|POST /_sandbox/account      {"failure": "password_changed"|"feature_not_active"|"wrong_region"
                                 |null, "match": "/insightData", "api_endpoint": "http://..."}
GET|POST /_sandbox/api-users    {"username": "...", "password": "...", "scheme": "tiered"|"flat"}
GET|POST /_sandbox/clock        {"advance_seconds": 61}
POST /_sandbox/settle           apply every import that is due now
GET  /_sandbox/calls            ?since=<ISO or epoch>&after_id=<n>&path=<prefix>
GET  /_sandbox/state            ?limit=<rows per table, default 1000>
GET  /_sandbox/enrolments       every enrolment with its contacts, and counts per program+contact
POST /_sandbox/plant            see plant()
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from . import contact_rules, contacts, imports, insight, page, profiles
from .context import Reply
from .store import Store, iso, parse_iso, row_dict

if TYPE_CHECKING:
    from .server import App, SandboxHandler

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
ACCOUNT_FAILURES = (None, "password_changed", "feature_not_active", "wrong_region")


class ControlError(Exception):
    pass


def handle(
    handler: SandboxHandler, method: str, path: str, query: dict[str, list[str]], body: bytes
) -> Reply:
    if handler.client_address[0] not in LOOPBACK:
        return Reply(403, {"error": "the sandbox control surface answers loopback callers only"})
    app = handler.app
    name = path[len("/_sandbox") :].strip("/") or "page"
    try:
        data = json.loads(body) if body.strip() else {}
        action = ACTIONS.get((method, name))
        if action is None:
            return Reply(404, {"error": f"no control action {method} /_sandbox/{name}"})
        return action(app, data, {k: v[0] for k, v in query.items()})
    except (ControlError, ValueError, KeyError, TypeError) as exc:
        return Reply(400, {"error": str(exc)})


def show_page(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(
        200,
        page.render(state(app, int(query.get("limit", 200)))),
        content_type="text/html; charset=utf-8",
    )


def health(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(200, {"ok": True, "profile": app.profile.name, "base_url": app.base_url})


def reset(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    app.reset()
    if data.get("profile"):
        app.profile = profiles.load(data["profile"])
    return Reply(200, {"ok": True, "profile": app.profile.to_dict()})


def get_profile(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(200, app.profile.to_dict())


def set_profile(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    if set(data) == {"name"}:
        app.profile = profiles.load(str(data["name"]))
    else:
        app.profile = profiles.load(data)
    return Reply(200, app.profile.to_dict())


def get_faults(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(200, app.faults.describe())


def set_faults(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    return Reply(200, app.faults.set(data))


def get_account(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(200, app.account)


def set_account(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    if data.get("failure") not in ACCOUNT_FAILURES:
        raise ControlError(f"failure must be one of {ACCOUNT_FAILURES}")
    app.account = {k: v for k, v in data.items() if v is not None}
    return Reply(200, app.account)


def get_users(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(
        200,
        [
            {"username": u, "scheme": s or app.profile.default_scheme}
            for u, (_, s) in app.users().items()
        ],
    )


def add_user(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    app.add_user(str(data["username"]), str(data["password"]), data.get("scheme"))
    return get_users(app, data, query)


def clock(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    with app.store.connect() as db:
        if data.get("advance_seconds"):
            app.store.advance_clock(db, float(data["advance_seconds"]))
        now = app.store.now()
    return Reply(200, {"now": iso(now), "epoch": now})


def settle(app: App, data: Any, query: dict[str, str]) -> Reply:
    with app.store.connect() as db:
        applied = imports.settle(
            app.store,
            db,
            insight.Limits(app.profile.insight_max_string, app.profile.insight_max_key),
        )
    return Reply(200, {"applied": applied})


def since_value(raw: str | None) -> float:
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        return parse_iso(raw)


def calls(app: App, data: Any, query: dict[str, str]) -> Reply:
    where = ["ts >= ?", "id > ?"]
    args: list[Any] = [since_value(query.get("since")), int(query.get("after_id", 0))]
    if query.get("path"):
        where.append("path LIKE ?")
        args.append(query["path"] + "%")
    with app.store.connect() as db:
        rows = db.execute(
            f"SELECT * FROM calls WHERE {' AND '.join(where)} ORDER BY id",
            args,
        ).fetchall()
    items = [call_json(r) for r in rows]
    return Reply(
        200,
        {"calls": items, "last_id": items[-1]["id"] if items else int(query.get("after_id", 0))},
    )


def call_json(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "time": iso(row["ts"]),
        "epoch": row["ts"],
        "method": row["method"],
        "path": row["path"],
        "tier": row["tier"],
        "status": row["status"],
        "api_user": row["api_user"],
    }
    if row["import_id"]:
        out["import"] = {
            "id": row["import_id"],
            "kind": row["import_kind"],
            "records": row["records"],
        }
    note = json.loads(row["note"]) if row["note"] else {}
    if row["records"] is not None and not row["import_id"]:
        note["records"] = row["records"]
    if note:
        out["note"] = note
    return out


def enrolments(app: App, data: Any, query: dict[str, str]) -> Reply:
    with app.store.connect() as db:
        return Reply(200, enrolment_state(db))


def enrolment_state(db: sqlite3.Connection) -> dict[str, Any]:
    log = [
        {
            "id": r["id"],
            "programId": r["program_id"],
            "contacts": json.loads(r["contacts"]),
            "addressBooks": json.loads(r["address_books"]),
            "dateCreated": iso(r["created"]),
        }
        for r in db.execute("SELECT * FROM enrolments ORDER BY created")
    ]
    counts = [
        {"programId": r["program_id"], "contactId": r["contact_id"], "count": r["n"]}
        for r in db.execute(
            "SELECT program_id, contact_id, COUNT(*) AS n FROM enrolment_contacts "
            "GROUP BY program_id, contact_id ORDER BY program_id, contact_id"
        )
    ]
    return {"log": log, "counts": counts}


def state_action(app: App, data: Any, query: dict[str, str]) -> Reply:
    return Reply(200, state(app, int(query.get("limit", 1000))))


def state(app: App, limit: int) -> dict[str, Any]:
    """Everything the sandbox holds (at most `limit` rows a table), imports due applied first."""
    store = app.store
    with store.connect() as db:
        imports.settle(
            store, db, insight.Limits(app.profile.insight_max_string, app.profile.insight_max_key)
        )
        now = store.now()
        return {
            "now": iso(now),
            "base_url": app.base_url,
            "profile": app.profile.to_dict(),
            "account": app.account,
            "faults": app.faults.describe(),
            "counts": {
                t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("contacts", "records", "suppressions", "imports", "calls", "enrolments")
            },
            "contacts": contact_state(db, limit),
            "data_fields": [
                dict(r) | {"default_value": json.loads(r["default_value"])}
                for r in db.execute("SELECT * FROM data_fields ORDER BY name")
            ],
            "lists": list_state(db),
            "collections": collection_state(db, limit),
            "imports": import_state(db, limit),
            "suppressions": suppression_state(db, limit),
            "resubscribe_challenges": [
                {"contactId": r["contact_id"], "time": iso(r["ts"])}
                for r in db.execute("SELECT * FROM challenges ORDER BY ts LIMIT ?", (limit,))
            ],
            "programs": [
                {"id": r["id"], "name": r["name"], "status": r["status"]}
                for r in db.execute("SELECT * FROM programs ORDER BY id")
            ],
            "enrolments": enrolment_state(db),
            "calls_per_minute": calls_per_minute(db, now),
            "rate_limits": app.limiter.usage(now, app.profile),
            "imports_in_flight": {
                k: imports.in_flight(db, k, now) for k in (imports.CONTACTS, imports.INSIGHT)
            },
            "peak_imports_in_flight": {
                k: int(Store.get_meta(db, f"peak_in_flight_{k}", 0))
                for k in (imports.CONTACTS, imports.INSIGHT)
            },
        }


def contact_state(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    rows = [row_dict(r) for r in db.execute("SELECT * FROM contacts ORDER BY id LIMIT ?", (limit,))]
    field_names = list(contact_rules.data_field_types(db))
    return [contacts.render(db, r, field_names) for r in rows]


def list_state(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "visibility": r["visibility"],
            "contacts": r["n"],
        }
        for r in db.execute(
            "SELECT l.*, (SELECT COUNT(*) FROM list_members m WHERE m.list_id = l.id) AS n "
            "FROM lists l ORDER BY id"
        )
    ]


def collection_state(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    collections = []
    for c in db.execute("SELECT * FROM collections ORDER BY name"):
        records = [
            insight.render_record(r)
            for r in db.execute(
                "SELECT * FROM records WHERE collection = ? ORDER BY key LIMIT ?",
                (c["name"], limit),
            )
        ]
        collections.append(
            {
                "name": c["name"],
                "scope": c["scope"],
                "type": c["type"],
                "schema": insight.schema_listing(json.loads(c["schema"])),
                "recordCount": db.execute(
                    "SELECT COUNT(*) FROM records WHERE collection = ?", (c["name"],)
                ).fetchone()[0],
                "records": records,
            }
        )
    return collections


def import_state(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    import_rows = []
    for r in db.execute(
        "SELECT id, kind, submitted, finish_at, records, applied, collection, "
        "result FROM imports ORDER BY submitted DESC LIMIT ?",
        (limit,),
    ):
        result = json.loads(r["result"]) if r["result"] else {}
        import_rows.append(
            {
                "id": r["id"],
                "kind": r["kind"],
                "records": r["records"],
                "collection": r["collection"],
                "submitted": iso(r["submitted"]),
                "finishAt": iso(r["finish_at"]),
                "status": ("Failed" if result.get("failed") else "Finished")
                if r["applied"]
                else "NotFinished",
                "summary": result.get("summary"),
                "failures": len(result.get("failures", [])),
            }
        )
    return import_rows


def suppression_state(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    return [
        {
            "contactId": r["contact_id"],
            "email": r["email"],
            "reason": r["reason"],
            "dateRemoved": iso(r["date_removed"]),
        }
        for r in db.execute(
            "SELECT s.*, c.email FROM suppressions s LEFT JOIN contacts c "
            "ON c.id = s.contact_id ORDER BY s.date_removed LIMIT ?",
            (limit,),
        )
    ]


def calls_per_minute(db: sqlite3.Connection, now: float) -> dict[str, dict[str, int]]:
    """Calls per tier per minute over the last hour."""
    per_minute: dict[str, dict[str, int]] = {}
    for r in db.execute(
        "SELECT tier, CAST(ts / 60 AS INTEGER) AS minute, COUNT(*) AS n FROM calls "
        "WHERE ts >= ? GROUP BY tier, minute ORDER BY minute",
        (now - 3600,),
    ):
        per_minute.setdefault(r["tier"] or "none", {})[iso(r["minute"] * 60) or ""] = r["n"]
    return per_minute


def plant(app: App, data: dict[str, Any], query: dict[str, str]) -> Reply:
    """Put state in place directly, bypassing DotDigital's rules. Every key is optional:

    {"data_fields": [{"name", "type", "visibility"?, "defaultValue"?}],
     "lists": [{"id"?, "name", "visibility"?}],
     "programs": [{"id", "name", "status": "Active"|"Draft"|"Deactivated"|"ReadOnly"}],
     "contacts": [{"email"?, "mobileNumber"?, "dataFields"?, "status"? (email channel status,
                   e.g. "unsubscribed", "hardBounced"), "optInType"?, "emailType"?, "lists"?,
                   "created"?, "updated"? (ISO)}],
     "suppressions": [{"email", "reason"?: "Unsubscribed"|"HardBounced"|..., "dateRemoved"?}],
     "collections": [{"name", "scope": "contact"|"account", "type"?}],
     "records": [{"collection", "key", "json", "email"? | "contactId"?}]}
    Contacts are upserted by email (else mobileNumber); a suppression creates its contact.
    """
    store = app.store
    out: dict[str, list[Any]] = {}
    with store.connect() as db, store.write(db):
        now = store.now()
        plant_definitions(db, data, now, out)
        for c in data.get("contacts", []):
            out.setdefault("contacts", []).append(plant_contact(db, c, now))
        for s in data.get("suppressions", []):
            out.setdefault("suppressions", []).append(plant_suppression(db, s, now))
        for c in data.get("collections", []):
            if insight.collection(db, c["name"]) is None:
                insight.create_collection(db, c["name"], c["scope"], c.get("type", "custom"), now)
        for r in data.get("records", []):
            plant_record(db, r, now)
    return Reply(200, {"ok": True, "ids": out})


def plant_definitions(
    db: sqlite3.Connection, data: dict[str, Any], now: float, out: dict[str, list[Any]]
) -> None:
    """The account's data fields, lists and programs; the new ids are added to `out`."""
    for f in data.get("data_fields", []):
        db.execute(
            "INSERT OR REPLACE INTO data_fields (name, type, visibility, default_value) "
            "VALUES (?,?,?,?)",
            (
                f["name"].upper(),
                f["type"],
                f.get("visibility", "Private"),
                json.dumps(f.get("defaultValue")),
            ),
        )
    for lst in data.get("lists", []):
        cur = db.execute(
            "INSERT INTO lists (id, name, visibility, created) VALUES (?,?,?,?)",
            (lst.get("id"), lst["name"], lst.get("visibility", "Private"), now),
        )
        out.setdefault("lists", []).append(cur.lastrowid)
    for p in data.get("programs", []):
        db.execute(
            "INSERT OR REPLACE INTO programs (id, name, status, created) VALUES (?,?,?,?)",
            (p["id"], p["name"], p.get("status", "Active"), now),
        )
        out.setdefault("programs", []).append(p["id"])


def plant_suppression(db: sqlite3.Connection, s: dict[str, Any], now: float) -> int:
    """A suppression, with its contact (created if need be); the contact's id."""
    reason = s.get("reason", "Unsubscribed")
    if reason not in contact_rules.REASON_TO_STATUS:
        raise ControlError(f"unknown suppression reason {reason!r}")
    when = parse_iso(s["dateRemoved"]) if s.get("dateRemoved") else now
    cid = plant_contact(
        db,
        {"email": s["email"], "status": contact_rules.REASON_TO_STATUS[reason]},
        now,
        suppression=False,
    )
    db.execute(
        "INSERT OR REPLACE INTO suppressions (contact_id, reason, date_removed) VALUES (?,?,?)",
        (cid, reason, when),
    )
    return cid


def plant_record(db: sqlite3.Connection, r: dict[str, Any], now: float) -> None:
    """An insight record, its fields merged into the collection's schema as an import would."""
    coll = insight.collection(db, r["collection"])
    if coll is None:
        raise ControlError(f"no collection {r['collection']!r}")
    owner = None
    if r.get("email") or r.get("contactId"):
        row = (
            contacts.find(db, "email", r["email"])
            if r.get("email")
            else contacts.find(db, "contactId", str(r["contactId"]))
        )
        if row is None:
            raise ControlError(f"no contact for record {r['key']!r}")
        owner = row["id"]
    schema = json.loads(coll["schema"])
    schema = insight.merge_fields(schema, r["json"], "", insight.Limits())
    db.execute(
        "UPDATE collections SET schema = ? WHERE name = ?",
        (json.dumps(schema), coll["name"]),
    )
    db.execute(
        "INSERT OR REPLACE INTO records (collection, key, contact_id, json, created, "
        "updated) VALUES (?,?,?,?,?,?)",
        (coll["name"], str(r["key"]), owner, json.dumps(r["json"]), now, now),
    )


def plant_contact(
    db: sqlite3.Connection, c: dict[str, Any], now: float, suppression: bool = True
) -> int:
    email = contact_rules.normalise_email(c.get("email"))
    mobile = str(c["mobileNumber"]).lstrip("+") if c.get("mobileNumber") else None
    row = None
    if email:
        row = contacts.find(db, "email", email)
    elif mobile:
        row = contacts.find(db, "mobileNumber", mobile)
    else:
        raise ControlError("a planted contact needs an email or mobileNumber")
    created = parse_iso(c["created"]) if c.get("created") else now
    updated = parse_iso(c["updated"]) if c.get("updated") else now
    status = c.get("status") or (
        row["email_status"] if row else "subscribed" if email else "noSubscription"
    )
    data = dict(row["data"]) if row else {}
    data.update({k.upper(): v for k, v in (c.get("dataFields") or {}).items()})
    data = {k: v for k, v in data.items() if v is not None}
    opt_in = contact_rules.OPT_IN_TYPES.get(
        str(c.get("optInType", "")).lower(), row["opt_in_type"] if row else "Unknown"
    )
    email_type = contact_rules.EMAIL_TYPES.get(
        str(c.get("emailType", "")).lower(), row["email_type"] if row else "Html"
    )
    if row is None:
        cur = db.execute(
            "INSERT INTO contacts (email, mobile, email_status, email_type, opt_in_type, "
            "sms_status, data, consent, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                email,
                mobile,
                status,
                email_type,
                opt_in,
                "noSubscription",
                json.dumps(data),
                "[]",
                created,
                updated,
            ),
        )
        cid = int(cur.lastrowid or 0)
    else:
        cid = int(row["id"])
        db.execute(
            "UPDATE contacts SET email_status = ?, email_type = ?, opt_in_type = ?, "
            "data = ?, updated = ?, mobile = COALESCE(?, mobile) WHERE id = ?",
            (status, email_type, opt_in, json.dumps(data), updated, mobile, cid),
        )
    for lid in c.get("lists", []):
        db.execute(
            "INSERT OR IGNORE INTO list_members (list_id, contact_id, status) "
            "VALUES (?, ?, 'subscribed')",
            (lid, cid),
        )
    if suppression and status in contact_rules.STATUS_TO_REASON and status != "softBounced":
        db.execute(
            "INSERT OR REPLACE INTO suppressions (contact_id, reason, date_removed) VALUES (?,?,?)",
            (cid, contact_rules.STATUS_TO_REASON[status], updated),
        )
    elif suppression and status == "subscribed":
        db.execute("DELETE FROM suppressions WHERE contact_id = ?", (cid,))
    return cid


ACTIONS = {
    ("GET", "page"): show_page,
    ("GET", "health"): health,
    ("POST", "reset"): reset,
    ("GET", "profile"): get_profile,
    ("POST", "profile"): set_profile,
    ("GET", "faults"): get_faults,
    ("POST", "faults"): set_faults,
    ("GET", "account"): get_account,
    ("POST", "account"): set_account,
    ("GET", "api-users"): get_users,
    ("POST", "api-users"): add_user,
    ("GET", "clock"): clock,
    ("POST", "clock"): clock,
    ("POST", "settle"): settle,
    ("GET", "calls"): calls,
    ("GET", "state"): state_action,
    ("GET", "enrolments"): enrolments,
    ("POST", "plant"): plant,
}
