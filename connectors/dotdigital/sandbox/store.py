"""The sandbox's state: one SQLite file in WAL mode, a connection per request, one writer at a time."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_users (
    username TEXT PRIMARY KEY, password TEXT NOT NULL, scheme TEXT);
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY, email TEXT UNIQUE, mobile TEXT UNIQUE,
    email_status TEXT NOT NULL, email_type TEXT NOT NULL, opt_in_type TEXT NOT NULL,
    sms_status TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}',
    consent TEXT NOT NULL DEFAULT '[]', created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS contacts_updated ON contacts (updated, id);
CREATE TABLE IF NOT EXISTS data_fields (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, visibility TEXT NOT NULL,
    default_value TEXT NOT NULL DEFAULT 'null', system INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lists (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    visibility TEXT NOT NULL, writable INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS list_members (
    list_id INTEGER NOT NULL, contact_id INTEGER NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (list_id, contact_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS list_members_contact ON list_members (contact_id);
CREATE TABLE IF NOT EXISTS suppressions (
    contact_id INTEGER PRIMARY KEY, reason TEXT NOT NULL, date_removed REAL NOT NULL);
CREATE INDEX IF NOT EXISTS suppressions_date ON suppressions (date_removed, contact_id);
CREATE TABLE IF NOT EXISTS challenges (contact_id INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY COLLATE NOCASE, scope TEXT NOT NULL, type TEXT NOT NULL,
    schema TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL COLLATE NOCASE, key TEXT NOT NULL, contact_id INTEGER,
    json TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (collection, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_contact ON records (contact_id, collection);
CREATE TABLE IF NOT EXISTS imports (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, submitted REAL NOT NULL, finish_at REAL NOT NULL,
    records INTEGER NOT NULL, payload TEXT, result TEXT, applied INTEGER NOT NULL DEFAULT 0,
    collection TEXT, api_user TEXT);
CREATE INDEX IF NOT EXISTS imports_pending ON imports (applied, finish_at);
CREATE TABLE IF NOT EXISTS async_jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS programs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS enrolments (
    id TEXT PRIMARY KEY, program_id INTEGER NOT NULL, contacts TEXT NOT NULL,
    address_books TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS enrolment_contacts (
    enrolment_id TEXT NOT NULL, program_id INTEGER NOT NULL, contact_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    tier TEXT, status INTEGER NOT NULL, api_user TEXT, import_id TEXT, import_kind TEXT,
    records INTEGER, note TEXT);
CREATE INDEX IF NOT EXISTS calls_ts ON calls (ts);
"""

STATE_TABLES = (
    "contacts",
    "data_fields",
    "lists",
    "list_members",
    "suppressions",
    "challenges",
    "collections",
    "records",
    "imports",
    "async_jobs",
    "programs",
    "enrolments",
    "enrolment_contacts",
    "calls",
    "meta",
)

# Every DotDigital account starts with these contact data fields.
SYSTEM_FIELDS = (
    ("FIRSTNAME", "String"),
    ("LASTNAME", "String"),
    ("FULLNAME", "String"),
    ("GENDER", "String"),
    ("POSTCODE", "String"),
    ("LASTSUBSCRIBED", "Date"),
)

# At most this many values in one `IN (...)` list, well within SQLite's limit on parameters.
CHUNK = 500


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> float:
    """Epoch seconds from an ISO 8601 date or date-time; naive values are taken as UTC."""
    text = value.strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    """A contacts row as a dict, its JSON columns (data fields, consent records) decoded."""
    out = dict(row)
    out["data"] = json.loads(out["data"])
    out["consent"] = json.loads(out["consent"])
    return out


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self.write_lock = threading.RLock()
        self._clock_offset = 0.0
        with self.connect() as db:
            db.executescript(SCHEMA)
            self._clock_offset = float(self.get_meta(db, "clock_offset", 0.0))
            if self.get_meta(db, "seeded") is None:
                self._seed(db)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def write(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One transaction under the process-wide writer lock (avoids SQLITE_BUSY upgrades)."""
        with self.write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance_clock(self, db: sqlite3.Connection, seconds: float) -> float:
        with self.write(db):
            self._clock_offset += seconds
            self.set_meta(db, "clock_offset", self._clock_offset)
        return self._clock_offset

    @staticmethod
    def get_meta(db: sqlite3.Connection, key: str, default: Any = None) -> Any:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    @staticmethod
    def set_meta(db: sqlite3.Connection, key: str, value: Any) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def reset(self) -> None:
        with self.connect() as db, self.write(db):
            for table in STATE_TABLES:
                db.execute(f"DELETE FROM {table}")
            self._clock_offset = 0.0
            self._seed(db)

    def _seed(self, db: sqlite3.Connection) -> None:
        now = self.now()
        db.executemany(
            "INSERT OR IGNORE INTO data_fields (name, type, visibility, system) "
            "VALUES (?, ?, 'Public', 1)",
            SYSTEM_FIELDS,
        )
        db.execute(
            "INSERT OR IGNORE INTO lists (id, name, visibility, writable, created) "
            "VALUES (1, 'Test', 'Private', 0, ?)",
            (now,),
        )
        self.set_meta(db, "seeded", True)
