"""The chaos run: the real stack under fire, then DotDigital compared with the ground truth.

    .venv/bin/python -m bench.chaos [--events 10000] [--seed 12] [--self-check] [--keep]

Needs PostgreSQL on 127.0.0.1 (``CHAOS_PG``, default ``postgresql://postgres@127.0.0.1:5432``; the
run drops and creates the database ``--database``, default ``chaos``) and ``redis-server`` on the
PATH: the run starts a *private* Redis on a free port (no persistence), so the machine's shared
Redis is never touched. Everything listens on 127.0.0.1.

What it does:

1. starts, each as its own process group: Redis (the broker), the DotDigital sandbox, gunicorn,
   a realtime and a bulk Celery worker and beat, against a fresh database with one workspace, a
   DotDigital connection with short client timeouts (``options["timeouts"]``), an ERP and a WMS
   flow (canonical webhooks), and a direct enrolment (``customer.upserted`` → program 9001);
2. posts the generator's events through the public webhooks (5% duplicate and 10% reordered
   deliveries) while the sandbox answers 10% 5xx, 5% 429 (plus 429 storms of 20 calls), 2% hangs
   longer than every client timeout (the sandbox applies the call, then hangs) and 2% dropped
   connections; meanwhile three workers are SIGKILLed (and restarted), the broker is killed and
   restarted empty (its queued messages lost), and the sandbox is killed and restarted;
3. clears the faults, waits until the backlog drains (the audit settles, no write is open, no
   enrolment is pending), runs ``manage.py syncdesk_audit --settle 10 --expect-delivery``;
4. reads DotDigital's final state through its API (v3 contacts by marker, insight records per
   contact and per account; enrolment counts from the sandbox's log) and compares it with the
   generator's truth, which never imports engine code.

The comparison knows Syncdesk's documented defaults as constants (stated in ``compare``):
data field names, the ``Orders`` / ``Stock`` collections and their document fields, and the two
program lists with their rules (docs/architecture.md, "Engine: delivery").

``--self-check`` proves each count can fail: one event is not posted (→ 1 lost), one enrolment is
sent a second time straight to the sandbox (→ 1 duplicated), one order's total is altered in the
sandbox (→ 1 mismatched).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from eventgen import Faults, Generator
from eventgen.post import PostStats, post_batches
from eventgen.truth import Truth, normalise_email

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BINDIR = Path(PYTHON).parent
HOST = "127.0.0.1"
API_USER = ("apiuser-sandbox@apiconnector.com", "sandbox-password")
PROGRAM_ID = 9001
ENROL_ON = "customer.upserted"

# Syncdesk's documented defaults (docs/architecture.md, monitoring/pipeline/flows.py's
# DEFAULT_MAPPINGS and mapping.py), restated here so the comparison does not import the engine.
FIELDS = ("FIRSTNAME", "LASTNAME", "ORDER_COUNT", "LTV", "LAST_ORDER_DATE", "LAST_DISPATCH_DATE")
FIELDS_BOOL = ("REFUNDED",)
ORDERS = "Orders"  # contact-scoped, keyed by order number; GrandTotal, RefundedTotal, Dispatched
STOCK = "Stock"  # account-scoped, keyed by SKU; Saleable
DISPATCHED_TODAY = ("Syncdesk - Dispatched today", timedelta(days=1))  # left when refunded
RECENT_BUYERS = ("Syncdesk - Recent buyers (30 days)", timedelta(days=30))
CENT = Decimal("0.01")


@dataclass
class ChaosConfig:
    events: int = 10_000
    seed: int = 12
    customers: int = 2000
    batch: int = 50
    chaos: bool = True  # sandbox faults, kills, broker and sandbox restarts
    kills: int = 3
    self_check: bool = False
    database: str = "chaos"
    pg: str = field(
        default_factory=lambda: os.environ.get("CHAOS_PG", "postgresql://postgres@127.0.0.1:5432")
    )
    # Short client timeouts per call class; hangs last longer than the longest of them.
    timeouts: dict[str, float] = field(
        default_factory=lambda: {"connect": 2.0, "single": 2.0, "read": 4.0, "bulk": 4.0}
    )
    drain_timeout: float = 900.0
    faults_in_drain: float = 120.0  # the sandbox's faults stay on this long into the drain at most
    post_rate: float | None = None  # events a second (None: as fast as the webhook answers)
    workdir: Path | None = None
    keep: bool = False
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


# ---- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(every)
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


class Stack:
    """Processes by name, each in its own process group (killed as a group), logs in `workdir`."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}
        self.restarts: Counter[str] = Counter()

    def start(self, name: str, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        argv = argv or self.argv[name]
        self.argv[name] = argv
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.restarts[name] += 1
        self.start(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    def ready(self, name: str) -> bool:
        """A Celery worker has logged that it is ready (since its latest start)."""
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return text.count(" ready.") > self.restarts[name]

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]


def postgres_answers(pg: str) -> bool:
    return (
        subprocess.run(
            ["psql", pg + "/postgres", "-Atqc", "select 1"],
            capture_output=True,
            timeout=10,
        ).returncode
        == 0
    )


def fresh_database(pg: str, name: str) -> str:
    for sql in (f"drop database if exists {name} with (force)", f"create database {name}"):
        subprocess.run(
            ["psql", pg + "/postgres", "-Atqc", sql], check=True, capture_output=True, timeout=60
        )
    return f"{pg}/{name}"


# ---- Django work, in a helper process (the harness itself never imports the engine) -------------


def django_helper(env: dict[str, str], action: str, arg: dict[str, Any]) -> Any:
    out = subprocess.run(
        [PYTHON, "-m", "bench.chaos", "_django", action, json.dumps(arg)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"helper {action} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _django_main(action: str, raw: str) -> None:  # pragma: no cover - runs in the helper process
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    arg = json.loads(raw)
    result = _HELPERS[action](arg)
    print(json.dumps(result, default=str))


def _helper_seed(arg: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - helper process
    from accounts.models import Workspace
    from connectors.models import Connection
    from monitoring.models import DirectEnrolment, Flow
    from monitoring.pipeline.flows import (
        install_defaults,
        mark_backfill_complete,
        mark_catalogue_loaded,
    )
    from monitoring.pipeline.ingest import ingest_events

    workspace = Workspace.objects.create(name="Chaos Outfitters", slug="chaos", currency="GBP")
    dotdigital = Connection.objects.create(
        workspace=workspace, kind=Connection.Kind.DOTDIGITAL, name="DotDigital (sandbox)"
    )
    dotdigital.credentials = {"api_user": API_USER[0], "password": API_USER[1]}
    dotdigital.options = {
        "api_endpoint": arg["sandbox"],
        "discovery_url": arg["sandbox"],
        "timeouts": arg["timeouts"],
    }
    dotdigital.save(update_fields=["credentials", "options"])
    tokens: dict[str, str] = {}
    flows: dict[str, Flow] = {}
    for key, name, join in (
        ("demo-erp", "Chaos ERP", Flow.JoinKey.ORDER_NUMBER),
        ("demo-wms", "Chaos WMS", Flow.JoinKey.CHANNEL_ORDER_REF),
    ):
        source = Connection.objects.create(
            workspace=workspace, kind=Connection.Kind.CANONICAL, name=name
        )
        tokens[key] = source.rotate_webhook_token()
        flow = Flow.objects.create(
            workspace=workspace,
            source=source,
            name=f"{name} → DotDigital",
            destination=dotdigital,
            join_key=join,
            masters_products=key == "demo-erp",
        )
        install_defaults(flow)
        flows[key] = flow
    DirectEnrolment.objects.create(
        workspace=workspace,
        destination=dotdigital,
        program_id=arg["program_id"],
        event_type=arg["enrol_on"],
    )
    catalogue = json.loads(Path(arg["catalogue"]).read_text())
    for key, flow in flows.items():
        mine = [e for e in catalogue if e["source"]["system"] == key]
        ingest_events(flow.source, mine, via="backfill", backfill=True)
    mark_catalogue_loaded(flows["demo-erp"])
    for flow in flows.values():
        mark_backfill_complete(flow, by="chaos")
    return tokens


def _helper_stats(arg: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - helper process
    from django.db.models import Count

    from monitoring.models import OPEN_STATES, Operation, ProgramEnrolment
    from monitoring.pipeline.audit import audit

    report = audit(None)
    if arg.get("enrol"):
        from monitoring.tasks import enrol_programs

        with contextlib.suppress(Exception):  # the broker may be down: next time
            enrol_programs.apply_async(queue="bulk", expires=30)
    return {
        "total": report.total,
        "counts": dict(report.counts),
        "in_progress": report.in_progress(ready_in_progress=True),
        "outside": len(report.outside),
        "open_ops": Operation.objects.filter(state__in=OPEN_STATES).count(),
        "ops": dict(Operation.objects.values_list("state").annotate(n=Count("pk"))),
        "enrolments": dict(ProgramEnrolment.objects.values_list("state").annotate(n=Count("pk"))),
    }


def _helper_inbox(arg: dict[str, Any]) -> list[list[Any]]:  # pragma: no cover - helper process
    """(program, email) of each enrolment left `unknown` with an open occurrence in the inbox."""
    from exceptions_inbox.models import Occurrence
    from monitoring.models import ProgramEnrolment

    reported = {
        int(key.partition(":")[2])
        for key in Occurrence.objects.filter(
            group__kind="enrolment_unknown", state=Occurrence.State.OPEN
        ).values_list("event_key", flat=True)
    }
    return [
        [program, email]
        for program, email in ProgramEnrolment.objects.filter(
            pk__in=reported, state=ProgramEnrolment.State.UNKNOWN
        ).values_list("program_id", "email")
    ]


_HELPERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "seed": _helper_seed,
    "stats": _helper_stats,
    "inbox": _helper_inbox,
}


# ---- DotDigital, read through its own API ------------------------------------------------------


class DotDigitalReader:
    """DotDigital's state through its public API (plain HTTP, Basic auth), plus the sandbox's
    enrolment log, which DotDigital's API does not expose."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.auth = API_USER

    def _get(self, path: str, **params: Any) -> Any:
        for attempt in range(5):
            response = self.session.get(self.base + path, params=params, timeout=30)
            if response.status_code == 429 or response.status_code >= 500:
                time.sleep(0.5 * (attempt + 1))
                continue
            response.raise_for_status()
            return response.json()
        response.raise_for_status()
        return response.json()

    def contacts(self) -> Iterator[dict[str, Any]]:
        marker: str | None = None
        while True:
            params: dict[str, Any] = {
                "limit": 1000,
                "data-fields": "[[ALL]]",
                "include": "channelProperties|lists",
            }
            if marker:
                params["marker"] = marker
            body = self._get("/contacts/v3", **params)
            yield from body.get("_items") or []
            marker = ((body.get("_links") or {}).get("next") or {}).get("marker")
            if not marker:
                return

    def records(self, collection: str, email: str | None = None) -> Iterator[dict[str, Any]]:
        name = quote(collection, safe="")
        if email is None:
            path = f"/insightData/v3/account/{name}"
        else:
            path = f"/insightData/v3/contacts/email/{quote(email, safe='@+')}/{name}"
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if marker:
                params["marker"] = marker
            try:
                body = self._get(path, **params)
            except requests.HTTPError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return
                raise
            yield from body.get("_items") or []
            marker = ((body.get("_links") or {}).get("next") or {}).get("marker")
            if not marker:
                return

    def enrolments(self) -> dict[str, Any]:
        response = self.session.get(self.base + "/_sandbox/enrolments", timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def calls(self, path: str) -> list[dict[str, Any]]:
        response = self.session.get(
            self.base + "/_sandbox/calls", params={"path": path}, timeout=30
        )
        response.raise_for_status()
        return list(response.json()["calls"])


# ---- the comparison -----------------------------------------------------------------------------


@dataclass
class Comparison:
    lost: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    mismatched: Counter[str] = field(default_factory=Counter)
    withheld: Counter[str] = field(default_factory=Counter)  # at most once, by design
    checked: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, counter: Counter[str], what: str) -> None:
        counter[kind] += 1
        if len(self.examples) < 40:
            self.examples.append(what)

    @property
    def totals(self) -> tuple[int, int, int]:
        return sum(self.lost.values()), sum(self.duplicated.values()), sum(self.mismatched.values())


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value)).quantize(CENT)
    except ArithmeticError:
        return None


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).replace(microsecond=0)


def _same_moment(a: datetime | None, b: Any) -> bool:
    other = _moment(b)
    if a is None or other is None:
        return a is None and other is None
    return a.replace(microsecond=0) == other


def expected_lists(
    truth: Truth, since: datetime, until: datetime
) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """Who should be on each program list at any moment in [since, until], and the (list, email)
    pairs whose expiry falls inside that window (either answer is right: not counted).

    The rules (docs/architecture.md, "Programs"): "Dispatched today" holds a contact for a day
    after their latest dispatch, and not when that dispatch's order is refunded; "Recent buyers
    (30 days)" holds a contact for 30 days after their latest order or dispatch."""
    by_contact: dict[str, list[Any]] = defaultdict(list)
    for order in truth.orders.values():
        if order.email:
            by_contact[order.email].append(order)
    wanted: dict[str, set[str]] = {DISPATCHED_TODAY[0]: set(), RECENT_BUYERS[0]: set()}
    either: set[tuple[str, str]] = set()
    for email, orders in by_contact.items():
        dispatched = [o for o in orders if o.dispatched_at is not None]
        if dispatched:
            latest = max(dispatched, key=lambda o: o.dispatched_at)
            if not latest.is_refunded:
                expiry = latest.dispatched_at + DISPATCHED_TODAY[1]
                if expiry > until:
                    wanted[DISPATCHED_TODAY[0]].add(email)
                elif expiry > since:
                    either.add((DISPATCHED_TODAY[0], email))
        bought = max(
            [o.placed_at for o in orders] + [o.dispatched_at for o in dispatched], default=None
        )
        if bought is not None:
            expiry = bought + RECENT_BUYERS[1]
            if expiry > until:
                wanted[RECENT_BUYERS[0]].add(email)
            elif expiry > since:
                either.add((RECENT_BUYERS[0], email))
    return wanted, either


def compare(
    truth: Truth,
    reader: DotDigitalReader,
    *,
    lists_since: datetime,
    enrolment_faults: int = 0,
    enrolments_in_inbox: frozenset[tuple[int, str]] = frozenset(),
) -> Comparison:
    """DotDigital's final state against the truth. Counts:

    - lost: an expected contact, order record, stock record, list membership or enrolment that
      DotDigital does not have;
    - duplicated: more than one contact per normalised email, an order number stored under more
      than one record key, more than one enrolment per program and contact (the sandbox's log);
    - mismatched: every value that differs (a data field, the email channel status, an order's
      total, refunded total, dispatched flag or owner, a saleable level, a list membership that
      should not be there), and any contact or order DotDigital has that the truth does not.

    Stated assumptions: the default field mappings and collections above; an aggregate of a
    contact without orders may be absent or zero; a contact whose email channel was set
    `subscribed` after an `unsubscribed` may be `subscribed` (the two changes coalesced before
    sending), `pendingOptIn` (re-subscribed with a challenge) or `unsubscribed` (the opt-out was
    newer) — design.md's consent rules — while one whose last change was `unsubscribed` must be
    `unsubscribed`; list membership is checked for subscribed contacts only (DotDigital keeps
    unsubscribed contacts off lists). Direct enrolments are sent at most once: an expected
    enrolment missing after an enrolment call the sandbox answered with an injected fault is
    counted as *withheld* (up to 25 contacts per such call), not lost, and so is one Syncdesk left
    `unknown` with an open occurrence in the inbox (a call cut by the sandbox's own kill leaves no
    answer in its log)."""
    result = Comparison()
    until = datetime.now(UTC)
    wanted_lists, either = expected_lists(truth, lists_since, until)
    by_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for contact in reader.contacts():
        email = (contact.get("identifiers") or {}).get("email")
        if email:
            by_email[normalise_email(email)].append(contact)
    for email, found in by_email.items():
        if len(found) > 1:
            result.note("contact", result.duplicated, f"duplicated contact {email} x{len(found)}")
        if email not in truth.contacts:
            result.note("contact", result.mismatched, f"unexpected contact {email}")
    orders_by_email: dict[str, list[Any]] = defaultdict(list)
    for order in truth.orders.values():
        if order.email:
            orders_by_email[order.email].append(order)
    contact_ids: dict[int, str] = {}
    seen_order_keys: dict[str, list[str]] = defaultdict(list)
    for email, expected in sorted(truth.contacts.items()):
        result.checked["contacts"] += 1
        matches = by_email.get(email)
        if not matches:
            result.note("contact", result.lost, f"lost contact {email}")
            continue
        contact = matches[0]
        contact_ids[int(contact["contactId"])] = email
        data = {k.upper(): v for k, v in (contact.get("dataFields") or {}).items()}
        orders = orders_by_email.get(email, [])
        dispatches = [o.dispatched_at for o in orders if o.dispatched_at is not None]
        latest = max(orders, key=lambda o: o.placed_at) if orders else None
        want: dict[str, Any] = {
            "FIRSTNAME": expected.first_name or None,
            "LASTNAME": expected.last_name or None,
            "ORDER_COUNT": expected.order_count,
            "LTV": expected.ltv.quantize(CENT),
            "LAST_ORDER_DATE": expected.last_order_date,
            "LAST_DISPATCH_DATE": max(dispatches) if dispatches else None,
            "REFUNDED": bool(latest and latest.is_refunded),
        }
        for name, value in want.items():
            got = data.get(name)
            result.checked["values"] += 1
            if name in ("FIRSTNAME", "LASTNAME"):
                ok = (got or None) == value
            elif name == "ORDER_COUNT":
                ok = (got in (None, 0) and value == 0) or (
                    got is not None and _decimal(got) == Decimal(value)
                )
            elif name == "LTV":
                ok = (got in (None, 0) and value == 0) or _decimal(got) == value
            elif name == "REFUNDED":
                ok = bool(got in (True, "true", "True")) == value
            else:
                ok = _same_moment(value, got)
            if not ok:
                result.note(
                    "field", result.mismatched, f"{email} {name}: want {value!r} got {got!r}"
                )
        status = ((contact.get("channelProperties") or {}).get("email") or {}).get("status")
        if expected.consents:
            result.checked["values"] += 1
            if not expected.consents[-1]:
                allowed = {"unsubscribed"}
            elif False in expected.consents:
                allowed = {"subscribed", "pendingOptIn", "unsubscribed"}
            else:
                allowed = {"subscribed"}
            if status not in allowed:
                result.note(
                    "email status",
                    result.mismatched,
                    f"{email} email status {status!r}, want one of {sorted(allowed)}",
                )
        on_lists = {str(lst.get("name")) for lst in contact.get("lists") or []}
        if status == "subscribed":
            for list_name, members in wanted_lists.items():
                if (list_name, email) in either:
                    continue
                result.checked["list memberships"] += 1
                if email in members and list_name not in on_lists:
                    result.note("list", result.lost, f"{email} missing from {list_name}")
                elif email not in members and list_name in on_lists:
                    result.note("list", result.mismatched, f"{email} wrongly on {list_name}")
        records = {str(r.get("key")): r for r in reader.records(ORDERS, email)}
        for key, record in records.items():
            number = str((record.get("json") or {}).get("OrderNumber") or key)
            seen_order_keys[number].append(key)
        for order in orders:
            result.checked["orders"] += 1
            stored = records.get(order.order_number)
            if stored is None:
                result.note("order", result.lost, f"lost order {order.order_number} of {email}")
                continue
            doc = stored.get("json") or {}
            checks = {
                "GrandTotal": _decimal(doc.get("GrandTotal")) == order.grand_total.quantize(CENT),
                "RefundedTotal": (_decimal(doc.get("RefundedTotal")) or Decimal("0.00"))
                == order.refunded.quantize(CENT),
                "Dispatched": bool(doc.get("Dispatched")) == order.dispatched,
                "PurchaseDate": _same_moment(order.placed_at, doc.get("PurchaseDate")),
            }
            for name, ok in checks.items():
                result.checked["values"] += 1
                if not ok:
                    result.note(
                        "order",
                        result.mismatched,
                        f"order {order.order_number} {name}: want "
                        f"{getattr(order, _ORDER_ATTR[name])!r} got {doc.get(name)!r}",
                    )
        expected_numbers = {o.order_number for o in orders}
        for key in records:
            if key not in expected_numbers:
                result.note("order", result.mismatched, f"unexpected order {key} under {email}")
    for number, keys in seen_order_keys.items():
        if len(keys) > 1:
            result.note("order", result.duplicated, f"order {number} under keys {keys}")
    stock = {str(r.get("key")): r.get("json") or {} for r in reader.records(STOCK)}
    for sku, level in sorted(truth.saleable.items()):
        result.checked["stock"] += 1
        doc = stock.get(sku)
        if doc is None:
            result.note("stock", result.lost, f"lost stock record {sku}")
        elif doc.get("Saleable") != level:
            result.note(
                "stock", result.mismatched, f"{sku} saleable {doc.get('Saleable')} != {level}"
            )
    _compare_enrolments(truth, reader, contact_ids, result, enrolment_faults, enrolments_in_inbox)
    return result


_ORDER_ATTR = {
    "GrandTotal": "grand_total",
    "RefundedTotal": "refunded",
    "Dispatched": "dispatched",
    "PurchaseDate": "placed_at",
}


def _compare_enrolments(
    truth: Truth,
    reader: DotDigitalReader,
    contact_ids: dict[int, str],
    result: Comparison,
    faulted_calls: int,
    in_inbox: frozenset[tuple[int, str]] = frozenset(),
) -> None:
    log = reader.enrolments()
    counts: dict[tuple[int, str], int] = {}
    for row in log.get("counts") or []:
        email = contact_ids.get(int(row["contactId"]), f"contact #{row['contactId']}")
        counts[(int(row["programId"]), email)] = int(row["count"])
    missing: list[str] = []
    for program, emails in sorted(truth.enrolments.items()):
        for email in sorted(emails):
            result.checked["enrolments"] += 1
            n = counts.get((program, email), 0)
            if n == 0 and (program, email) in in_inbox:
                result.withheld["enrolments in the inbox"] += 1
            elif n == 0:
                missing.append(f"{email} not enrolled in program {program}")
    for (program, email), n in counts.items():
        if n > 1:
            result.note("enrolment", result.duplicated, f"{email} enrolled {n}x in {program}")
        elif email not in truth.enrolments.get(program, set()):
            result.note(
                "enrolment", result.mismatched, f"unexpected enrolment {email} in {program}"
            )
    withheld = min(len(missing), 25 * faulted_calls)
    result.withheld["enrolments"] += withheld
    for what in missing[withheld:]:
        result.note("enrolment", result.lost, what)


def faulted_enrolment_calls(reader: DotDigitalReader) -> int:
    """Enrolment calls the sandbox answered with a 5xx or dropped: their outcome is unknown to
    Syncdesk, which by design does not retry them. (A hang is applied before it hangs, so its
    enrolment is there; a 429 was refused, so a missing enrolment after one is lost.)"""
    n = 0
    for call in reader.calls("/v2/programs/enrolments"):
        if call["method"] == "POST" and (call["status"] >= 500 or call["status"] == 0):
            n += 1
    return n


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class ChaosResult:
    comparison: Comparison
    audit_rc: int
    audit_output: str
    drain_seconds: float
    post_seconds: float
    post: PostStats
    actions: list[str]
    sandbox_faults: dict[str, Any]
    truth_events: int
    truth_deliveries: int
    dropped: str | None = None
    timeline: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lost, dup, mis = self.comparison.totals
        c = self.comparison
        lines = [
            f"events generated {self.truth_events}, deliveries posted {self.post.events} "
            f"(duplicates included) in {self.post.requests} requests, "
            f"webhook answers {dict(sorted(self.post.statuses.items()))}",
            f"posting took {self.post_seconds:.1f} s; chaos: " + "; ".join(self.actions),
            f"sandbox faults injected: {self.sandbox_faults}",
            f"checked: {dict(c.checked)}",
            f"LOST {lost} {dict(c.lost)}",
            f"DUPLICATED {dup} {dict(c.duplicated)}",
            f"MISMATCHED {mis} {dict(c.mismatched)}",
            "withheld at most once (enrolment calls answered with a fault, or in the inbox): "
            f"{dict(c.withheld)}",
            f"audit (syncdesk_audit --settle 10 --expect-delivery): exit {self.audit_rc}",
            *("    " + line for line in self.audit_output.strip().splitlines()),
            f"time to drain (last event posted → backlog empty): {self.drain_seconds:.1f} s",
            *self.timeline,
        ]
        if self.dropped:
            lines.insert(1, f"self-check: dropped {self.dropped}")
        lines += ["examples:", *("    " + e for e in c.examples[:40])]
        return "\n".join(lines)


def _consent_only_event(batches: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """A consent event of a person who appears in no other event (dropping it loses one contact)."""
    seen: Counter[str] = Counter()
    for batch in batches:
        for event in {e["event_id"]: e for e in batch}.values():
            email = (event.get("identity") or {}).get("email_raw")
            if email:
                seen[normalise_email(email)] += 1
    for batch in batches:
        for event in batch:
            email = (event.get("identity") or {}).get("email_raw")
            if (
                event["event_type"] == "consent.changed"
                and email
                and seen[normalise_email(email)] == 1
            ):
                return event
    return None


def _post_stream(
    urls: dict[str, str],
    batches: list[list[dict[str, Any]]],
    stats: PostStats,
    progress: list[int],
    rate: float | None,
) -> None:
    session = requests.Session()
    started = time.monotonic()
    try:
        for batch in batches:
            for system, url in urls.items():
                part = [e for e in batch if e["source"]["system"] == system]
                if part:
                    post_batches(url, [part], session=session, stats=stats, max_retries=40)
            progress[0] += len(batch)
            if rate:
                ahead = progress[0] / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        session.close()


def sandbox_faults(timeouts: dict[str, float], seed: int, storm: int = 0) -> dict[str, Any]:
    return {
        "seed": seed,
        "error_rate": 0.10,
        "rate_limit_rate": 0.05,
        "rate_limit_burst": storm,
        "hang_rate": 0.02,
        "hang_seconds": max(timeouts.values()) + 2.0,
        "drop_rate": 0.02,
    }


def _generate(
    config: ChaosConfig,
) -> tuple[Generator, list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The stream, ending ten minutes ago (the recent past, so "Dispatched today" has members and
    no event comes from the future): generated once to measure its span, then again shifted."""

    def make(start: datetime) -> tuple[Generator, list[dict[str, Any]], list[list[dict[str, Any]]]]:
        gen = Generator(
            seed=config.seed,
            customers=config.customers,
            faults=Faults(duplicate=0.05, reorder=0.10, guest_duplicate=0.05),
            start=start,
            enrol_on={ENROL_ON: PROGRAM_ID},
        )
        catalogue = gen.catalogue_events()
        return gen, catalogue, list(gen.batches(config.events, config.batch))

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    gen, _, _ = make(start)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    return make(start - (gen.clock - end))


def run(config: ChaosConfig) -> ChaosResult:
    log = config.log
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        raise RuntimeError("redis-server is not on the PATH")
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="syncdesk-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("redis", "web", "sandbox")}
    sandbox = f"http://{HOST}:{ports['sandbox']}"
    database_url = fresh_database(config.pg, config.database)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": f"redis://{HOST}:{ports['redis']}/0",
        "SYNCDESK_VAR_DIR": str(workdir / "var"),
        "DEMO_SANDBOX_PORT": str(ports["sandbox"]),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("SYNCDESK_KILL_AT", None)
    stack = Stack(workdir, env)
    log(f"chaos: workdir {workdir}, ports {ports}, database {database_url}")
    celery = [str(BINDIR / "celery"), "-A", "config"]
    stack.argv.update(
        {
            "redis": [
                "redis-server",
                "--port",
                str(ports["redis"]),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            "sandbox": [
                PYTHON,
                "-m",
                "connectors.dotdigital.sandbox",
                "--port",
                str(ports["sandbox"]),
                "--db",
                str(workdir / "dotdigital.sqlite3"),
                "--profile",
                "fast",
            ],
            "web": [
                str(BINDIR / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"{HOST}:{ports['web']}",
                "--workers",
                "2",
                "--threads",
                "2",
            ],
            "worker-realtime": [
                *celery,
                "worker",
                "-Q",
                "realtime",
                "-n",
                "realtime@chaos",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
            "worker-bulk": [
                *celery,
                "worker",
                "-Q",
                "bulk",
                "-n",
                "bulk@chaos",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
            "beat": [
                *celery,
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(workdir / "celerybeat-schedule"),
            ],
        }
    )
    gen, catalogue, batches = _generate(config)
    dropped: dict[str, Any] | None = None
    if config.self_check:
        dropped = _consent_only_event(batches)
        if dropped is None:
            raise RuntimeError("no consent-only event to drop; use more events")
        batches = [[e for e in b if e["event_id"] != dropped["event_id"]] for b in batches]
    (workdir / "catalogue.json").write_text(json.dumps(catalogue))
    actions: list[str] = []
    try:
        stack.start("redis")
        wait_for(lambda: port_open(ports["redis"]), 20, "redis")
        stack.start("sandbox")
        wait_for(lambda: requests.get(sandbox + "/_sandbox/health", timeout=2).ok, 30, "sandbox")
        requests.post(
            sandbox + "/_sandbox/plant",
            json={"programs": [{"id": PROGRAM_ID, "name": "Chaos welcome", "status": "Active"}]},
            timeout=10,
        ).raise_for_status()
        migrate = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrate.stderr[-3000:]}")
        tokens = django_helper(
            env,
            "seed",
            {
                "sandbox": sandbox,
                "timeouts": config.timeouts,
                "program_id": PROGRAM_ID,
                "enrol_on": ENROL_ON,
                "catalogue": str(workdir / "catalogue.json"),
            },
        )
        for name in ("web", "worker-realtime", "worker-bulk", "beat"):
            stack.start(name)
        wait_for(lambda: port_open(ports["web"]), 60, "web")
        for worker in ("worker-realtime", "worker-bulk"):
            wait_for(partial(stack.ready, worker), 90, worker)
        urls = {
            system: f"http://{HOST}:{ports['web']}/hooks/{token}/"
            for system, token in tokens.items()
        }
        lists_since = datetime.now(UTC)
        if config.chaos:
            requests.post(
                sandbox + "/_sandbox/faults",
                json=sandbox_faults(config.timeouts, config.seed),
                timeout=10,
            ).raise_for_status()
        stats = PostStats()
        progress = [0]
        total = sum(len(b) for b in batches)
        poster = threading.Thread(
            target=_post_stream,
            args=(urls, batches, stats, progress, config.post_rate),
            daemon=True,
        )
        started = time.monotonic()
        poster.start()
        schedule = _chaos_schedule(config) if config.chaos else []
        while poster.is_alive():
            poster.join(timeout=0.5)
            done = progress[0] / max(1, total)
            while schedule and done >= schedule[0][0]:
                _, action = schedule.pop(0)
                actions.append(_act(action, stack, config, sandbox, ports, log))
            for name in stack.dead():
                if name in ("web", "worker-realtime", "worker-bulk", "beat", "sandbox", "redis"):
                    log(f"chaos: {name} died on its own; restarting")
                    actions.append(f"{name} died on its own (restarted)")
                    stack.restart(name)
        for _, action in schedule:  # whatever the posting outran
            actions.append(_act(action, stack, config, sandbox, ports, log))
        posted_at = time.monotonic()
        post_seconds = posted_at - started
        log(f"chaos: posted {stats.events} deliveries in {post_seconds:.1f} s")
        injected: dict[str, int] = {}

        def clear_faults() -> None:
            state = requests.get(sandbox + "/_sandbox/faults", timeout=10).json()
            injected.update(state.get("injected") or {})
            for key, value in _injected_before_restart.items():
                injected[key] = injected.get(key, 0) + value
            _injected_before_restart.clear()
            requests.post(sandbox + "/_sandbox/faults", json={}, timeout=10)
            actions.append(f"{time.strftime('%H:%M:%S')} sandbox faults cleared")

        drain_seconds = _drain(
            env, stack, config, posted_at, log, clear_faults if config.chaos else None
        )
        audit = subprocess.run(
            [PYTHON, "manage.py", "syncdesk_audit", "--settle", "10", "--expect-delivery"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        timeline = delivery_timeline(database_url)
        reader = DotDigitalReader(sandbox)
        if config.self_check:
            _sabotage(reader, sandbox, log)
        comparison = compare(
            gen.truth,
            reader,
            lists_since=lists_since,
            enrolment_faults=faulted_enrolment_calls(reader),
            enrolments_in_inbox=frozenset(
                (int(program), str(email))
                for program, email in django_helper(env, "inbox", {}) or []
            ),
        )
        return ChaosResult(
            comparison=comparison,
            audit_rc=audit.returncode,
            audit_output=audit.stdout + audit.stderr,
            drain_seconds=drain_seconds,
            post_seconds=post_seconds,
            post=stats,
            actions=actions,
            sandbox_faults=injected,
            truth_events=gen.truth.events,
            truth_deliveries=gen.truth.deliveries,
            dropped=f"{dropped['event_type']} {dropped['source_event_id']}" if dropped else None,
            timeline=timeline,
        )
    finally:
        stack.stop_all()
        if not config.keep:
            subprocess.run(
                [
                    "psql",
                    config.pg + "/postgres",
                    "-Atqc",
                    f"drop database if exists {config.database} with (force)",
                ],
                capture_output=True,
                timeout=60,
            )


_injected_before_restart: dict[str, int] = {}


def _chaos_schedule(config: ChaosConfig) -> list[tuple[float, str]]:
    kills = ["kill worker-realtime", "kill worker-bulk", "kill worker-realtime"][: config.kills]
    marks = [0.2, 0.45, 0.7][: len(kills)]
    plan = list(zip(marks, kills, strict=True))
    plan += [
        (0.3, "429 storm"),
        (0.55, "restart broker"),
        (0.65, "429 storm"),
        (0.8, "restart sandbox"),
    ]
    return sorted(plan)


def _act(
    action: str,
    stack: Stack,
    config: ChaosConfig,
    sandbox: str,
    ports: dict[str, int],
    log: Callable[[str], None],
) -> str:
    at = time.strftime("%H:%M:%S")
    if action.startswith("kill "):
        name = action.split(" ", 1)[1]
        stack.kill(name)
        time.sleep(1.0)
        stack.start(name)
        stack.restarts[name] += 1
        what = f"{at} SIGKILLed {name} (process group) and restarted it"
    elif action == "restart broker":
        stack.kill("redis")
        time.sleep(1.0)
        stack.start("redis")
        wait_for(lambda: port_open(ports["redis"]), 20, "redis")
        what = f"{at} SIGKILLed the broker (Redis, no persistence: queued messages lost), restarted"
    elif action == "restart sandbox":
        state = requests.get(sandbox + "/_sandbox/faults", timeout=10).json()
        for key, value in (state.get("injected") or {}).items():
            _injected_before_restart[key] = _injected_before_restart.get(key, 0) + value
        storm_left = int((state.get("config") or {}).get("rate_limit_burst", 0))
        stack.kill("sandbox")
        time.sleep(1.0)
        stack.start("sandbox")
        wait_for(lambda: requests.get(sandbox + "/_sandbox/health", timeout=2).ok, 30, "sandbox")
        requests.post(
            sandbox + "/_sandbox/faults",
            json=sandbox_faults(config.timeouts, config.seed + 1, storm=storm_left),
            timeout=10,
        ).raise_for_status()
        what = f"{at} SIGKILLed the DotDigital sandbox, restarted it (state kept, faults set again)"
    elif action == "429 storm":
        state = requests.get(sandbox + "/_sandbox/faults", timeout=10).json()
        for key, value in (state.get("injected") or {}).items():
            _injected_before_restart[key] = _injected_before_restart.get(key, 0) + value
        storm_left = int((state.get("config") or {}).get("rate_limit_burst", 0))
        requests.post(
            sandbox + "/_sandbox/faults",
            json=sandbox_faults(config.timeouts, config.seed + 2, storm=storm_left + 20),
            timeout=10,
        ).raise_for_status()
        what = f"{at} 429 storm (the next 20 calls)"
    else:
        raise ValueError(action)
    log(f"chaos: {what}")
    return what


def delivery_timeline(database_url: str) -> list[str]:
    """Events delivered per 30 s through the run, and each minute's arrivals' time from arrival to
    delivered (p50/p95): where a fault parked delivery, and how soon it came back."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        per_30s = conn.execute(
            "SELECT to_timestamp(floor(extract(epoch FROM delivered_at) / 30) * 30), count(*)"
            " FROM monitoring_sourceevent WHERE delivered_at IS NOT NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
        by_minute = conn.execute(
            "SELECT date_trunc('minute', received_at), count(*),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - received_at)),"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - received_at))"
            " FROM monitoring_sourceevent WHERE state = 'delivered' GROUP BY 1 ORDER BY 1"
        ).fetchall()  # fmt: skip
        overall = conn.execute(
            "SELECT percentile_cont(0.95) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM delivered_at - received_at))"
            " FROM monitoring_sourceevent WHERE state = 'delivered'"
        ).fetchone()
    lines = ["delivered per 30 s: " + ", ".join(f"{t:%H:%M:%S} {n}" for t, n in per_30s)]
    lines += ["arrivals by minute, arrival → delivered (p50 / p95 s):"]
    lines += [
        f"    {m:%H:%M} {n:6d} events  {p50:7.1f}  {p95:7.1f}" for m, n, p50, p95 in by_minute
    ]
    p95 = overall[0] if overall and overall[0] is not None else float("nan")
    lines += [f"the run's events, arrival → delivered p95 {p95:.1f} s (target under 60 s)"]
    return lines


def _drain(
    env: dict[str, str],
    stack: Stack,
    config: ChaosConfig,
    posted_at: float,
    log: Callable[[str], None],
    clear_faults: Callable[[], None] | None,
) -> float:
    """Wait (bounded) until every event is settled, no write is open and no enrolment pends.
    The sandbox's faults stay on until the events first settle (or `faults_in_drain` s), then
    the retries drain. Beat sends the enrolment task every 200 s; the harness sends it every 15 s
    once the events have settled."""
    deadline = posted_at + config.drain_timeout
    last_enrol = 0.0
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for name in stack.dead():
            log(f"chaos: {name} died on its own; restarting")
            stack.restart(name)
        nudge = time.monotonic() - last_enrol > 15 and stats.get("in_progress") == 0
        stats = django_helper(env, "stats", {"enrol": nudge})
        if nudge:
            last_enrol = time.monotonic()
        pending = sum(
            n for state, n in stats["enrolments"].items() if state in ("pending", "sending")
        )
        log(
            f"chaos: drain {time.monotonic() - posted_at:.0f} s: events {stats['total']} "
            f"in progress {stats['in_progress']}, held {stats['counts'].get('held', 0)}, "
            f"open writes {stats['open_ops']}, "
            f"enrolments {stats['enrolments']}"
        )
        held = int(stats["counts"].get("held", 0))  # no true orphan in this stream
        if clear_faults is not None and (
            stats["in_progress"] == 0 or time.monotonic() - posted_at > config.faults_in_drain
        ):
            clear_faults()
            clear_faults = None
            continue
        if stats["in_progress"] == 0 and stats["open_ops"] == 0 and pending == 0 and held == 0:
            return time.monotonic() - posted_at
        time.sleep(3)
    log("chaos: the backlog did not drain within the timeout")
    return time.monotonic() - posted_at


def _sabotage(reader: DotDigitalReader, sandbox: str, log: Callable[[str], None]) -> None:
    """Self-check: one enrolment sent again, one order total altered, straight to DotDigital."""
    log_ = reader.enrolments()
    first = next(iter(log_.get("counts") or []), None)
    if first is None:
        raise RuntimeError("self-check: no enrolment to double")
    reader.session.post(
        sandbox + "/v2/programs/enrolments",
        json={"programId": first["programId"], "contacts": [first["contactId"]]},
        timeout=10,
    ).raise_for_status()
    for contact in reader.contacts():
        email = (contact.get("identifiers") or {}).get("email")
        records = list(reader.records(ORDERS, email)) if email else []
        if records:
            record = records[0]
            doc = dict(record["json"])
            doc["GrandTotal"] = float(Decimal(str(doc["GrandTotal"])) + 1)
            requests.post(
                sandbox + "/_sandbox/plant",
                json={
                    "records": [
                        {"collection": ORDERS, "key": record["key"], "json": doc, "email": email}
                    ]
                },
                timeout=10,
            ).raise_for_status()
            log(
                f"self-check: doubled enrolment of contact {first['contactId']}, "
                f"altered GrandTotal of order {record['key']}"
            )
            return
    raise RuntimeError("self-check: no order record to alter")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_django":
        _django_main(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(prog="bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--database", default="chaos")
    parser.add_argument("--self-check", action="store_true")
    parser.add_argument("--no-chaos", action="store_true", help="no faults, kills or restarts")
    parser.add_argument("--drain-timeout", type=float, default=900)
    parser.add_argument(
        "--rate", type=float, default=0, help="events a second (default: max(20, events/240))"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        events=args.events,
        seed=args.seed,
        customers=args.customers,
        database=args.database,
        self_check=args.self_check,
        chaos=not args.no_chaos,
        drain_timeout=args.drain_timeout,
        post_rate=args.rate or max(20.0, args.events / 240),
        keep=args.keep,
    )
    if not postgres_answers(config.pg):
        print(f"PostgreSQL does not answer at {config.pg}", file=sys.stderr)
        return 2
    result = run(config)
    print(result.summary())
    lost, dup, mis = result.comparison.totals
    if config.self_check:
        return 0 if (lost, dup, mis) == (1, 1, 1) else 1
    return 0 if (lost, dup, mis) == (0, 0, 0) and result.audit_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
