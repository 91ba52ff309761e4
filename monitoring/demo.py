"""The demo workspace: one retailer, one person per team and an admin (make demo), its generated
demo ERP and WMS, and the recorded source systems (below: how a system plugs in)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from accounts.models import Membership, Workspace
from connectors.models import Connection
from connectors.sources.base import RecordedRequest, Recording
from connectors.sources.registry import recordings
from connectors.sources.replay import replay_anchor, revealed
from eventgen import Generator
from monitoring.models import Flow
from monitoring.pipeline.flows import (
    install_defaults,
    mark_backfill_complete,
    mark_catalogue_loaded,
)
from monitoring.pipeline.ingest import ingest_events
from monitoring.pipeline.sources import poll_flow

log = logging.getLogger(__name__)

DEMO_PASSWORD = "syncdesk-demo"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    teams: tuple[str, ...]


DEMO_LOGINS = (
    DemoLogin("admin", Membership.Role.ADMIN, ("admins",)),
    DemoLogin("marketing", Membership.Role.MEMBER, ("marketing",)),
    DemoLogin("ops", Membership.Role.MEMBER, ("ops",)),
    DemoLogin("finance", Membership.Role.MEMBER, ("finance",)),
)


@transaction.atomic
def seed_demo() -> Workspace:
    """Create (or bring back to shape) the demo workspace and its people. Safe to run again."""
    workspace = Workspace.objects.filter(slug="demo").first()
    if workspace is None:
        workspace = Workspace.objects.create(
            name="Northwind Outfitters", slug="demo", currency="GBP"
        )
    for login in DEMO_LOGINS:
        user, created = User.objects.get_or_create(
            username=login.username, defaults={"email": f"{login.username}@example.com"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        workspace.add_member(user, role=login.role, teams=login.teams)
    seed_demo_source(workspace)
    return workspace


SANDBOX_USER = ("apiuser-sandbox@apiconnector.com", "sandbox-password")


def tokens_path() -> Path:
    return Path(settings.VAR_DIR) / "demo-tokens.json"


def seed_demo_source(workspace: Workspace) -> dict[str, str]:
    """The demo's DotDigital connection (the sandbox on DEMO_SANDBOX_PORT), a demo ERP flow and a
    demo WMS flow delivering to it, their webhook tokens in var/demo-tokens.json (only their
    hashes are in the database), and the catalogue and opening stock posted as the flows'
    backfill, then marked complete. Safe to run again."""
    port = int(os.environ.get("DEMO_SANDBOX_PORT", "8099"))
    sandbox = f"http://127.0.0.1:{port}"
    dotdigital, _ = Connection.objects.get_or_create(
        workspace=workspace, kind=Connection.Kind.DOTDIGITAL, name="DotDigital (sandbox)"
    )
    dotdigital.credentials = {"api_user": SANDBOX_USER[0], "password": SANDBOX_USER[1]}
    dotdigital.options = {"api_endpoint": sandbox, "discovery_url": sandbox}
    dotdigital.save(update_fields=["credentials", "options"])
    path = tokens_path()
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    flows: dict[str, Flow] = {}
    for key, name, join in (
        ("erp", "Demo ERP", Flow.JoinKey.ORDER_NUMBER),
        ("wms", "Demo WMS", Flow.JoinKey.CHANNEL_ORDER_REF),
    ):
        source, created = Connection.objects.get_or_create(
            workspace=workspace, kind=Connection.Kind.CANONICAL, name=name
        )
        if created or key not in tokens or Connection.for_webhook_token(tokens[key]) is None:
            tokens[key] = source.rotate_webhook_token()
        flow, _ = Flow.objects.get_or_create(
            workspace=workspace,
            source=source,
            defaults={
                "name": f"{name} → DotDigital",
                "destination": dotdigital,
                "join_key": join,
                "masters_products": key == "erp",
            },
        )
        install_defaults(flow)
        flows[key] = flow
    seed_demo_systems(workspace, dotdigital, tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    if flows["erp"].backfill_state != Flow.Backfill.COMPLETE:
        catalogue = Generator(seed=1).catalogue_events()
        for key, system in (("erp", "demo-erp"), ("wms", "demo-wms")):
            mine = [e for e in catalogue if e["source"]["system"] == system]
            ingest_events(flows[key].source, mine, via="backfill", backfill=True)
        mark_catalogue_loaded(flows["erp"])
        for flow in flows.values():
            mark_backfill_complete(flow, by="seed_demo")
    return tokens


# -- Recorded source systems ---------------------------------------------------------------
#
# How a source system plugs into `make demo`: its folder's `demo.py` defines a `Recording`
# (connectors/sources/base.py) and its line in connectors/sources/registry.py names it. A
# recording names the connection (name, credentials), the flow's join key, `requests` (the
# recorded webhook requests, `RecordedRequest`s, POSTed once to the flow's public webhook exactly
# as they came: body, content type, headers and query string) and, for a source the engine pulls
# from (its webhooks send ids to fetch, or it is polled), `api`: a `RecordedApi` that
# `manage.py run_demo_source --serve <key>` serves on 127.0.0.1 as one more demo process
# ("demo-<key>-api"), with `options(base_url)` pointing the connection at it. `polls=True` has
# the replay process page the flow the way the poller does (`poll_flow`) before posting the
# requests (after them with `poll_first=False`) and every POLL_SECONDS after. seed_demo creates
# one connection and flow per system (its webhook token in var/demo-tokens.json under `key`);
# run_demo starts the APIs and one "demo-replay" process (`run_demo_source --replay`) that does
# the rest and then keeps polling until stopped. A replay happens now: a recording's `requests`
# and `api` move the times they hold to the present run_demo gives them all
# (connectors/sources/replay.py), keeping their order, so a recorded event is not years late.

POLL_SECONDS = 30.0


@dataclass(frozen=True)
class DemoSystem(Recording):
    """A source's `Recording` with the kind it is recorded for (also its key in the demo)."""

    key: str = ""
    kind: str = ""


def demo_systems() -> list[DemoSystem]:
    """The recorded source systems of the demo, in the registry's order (their APIs take ports
    in it)."""
    return [
        DemoSystem(key=kind, kind=kind, **vars(recording))
        for kind, recording in recordings().items()
    ]


def demo_system(key: str) -> DemoSystem:
    for system in demo_systems():
        if system.key == key:
            return system
    raise KeyError(f"no demo system {key!r}")


def api_ports() -> dict[str, int]:
    """Each served system's port: DEMO_SOURCES_PORT (default: the sandbox's port + 1) upwards."""
    sandbox = int(os.environ.get("DEMO_SANDBOX_PORT", "8099"))
    first = int(os.environ.get("DEMO_SOURCES_PORT", str(sandbox + 1)))
    served = [s.key for s in demo_systems() if s.api is not None]
    return {key: first + index for index, key in enumerate(served)}


def api_url(system: DemoSystem) -> str:
    port = api_ports().get(system.key)
    return f"http://127.0.0.1:{port}" if port else ""


def seed_demo_systems(workspace: Workspace, dotdigital: Connection, tokens: dict[str, str]) -> None:
    """One connection and flow per recorded system; their tokens into `tokens`. Safe to rerun."""
    for system in demo_systems():
        source, created = Connection.objects.get_or_create(
            workspace=workspace, kind=system.kind, name=system.name
        )
        source.credentials = system.credentials()
        source.options = system.options(api_url(system))
        source.save(update_fields=["credentials", "options"])
        stale = system.key not in tokens or Connection.for_webhook_token(tokens[system.key]) is None
        if created or stale:
            tokens[system.key] = source.rotate_webhook_token()
        flow, _ = Flow.objects.get_or_create(
            workspace=workspace,
            source=source,
            defaults={
                "name": f"{system.name} → DotDigital",
                "destination": dotdigital,
                "join_key": system.join_key,
            },
        )
        install_defaults(flow)
        if flow.backfill_state != Flow.Backfill.COMPLETE:
            # Recorded history only: nothing older to wait for before aggregates may be sent.
            mark_backfill_complete(flow, by="seed_demo")


def serve_api(system: DemoSystem, port: int) -> ThreadingHTTPServer:
    """The system's recorded API on 127.0.0.1:`port` (the caller runs `serve_forever`)."""
    if system.api is None:
        raise ValueError(f"{system.key} has no recorded API")
    answer = system.api()
    present = replay_anchor()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, extra = answer(self.command, url.path, query, headers)
            now = datetime.now(UTC)
            if now < present:  # the recording still plays: what has happened so far
                body = revealed(body, now)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s api: %s", system.key, format % args)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def poll_demo_flows(system: DemoSystem) -> int:
    """Page the system's demo flows once, as the poller would; returns the events accepted."""
    accepted = 0
    for flow_id in Flow.objects.filter(
        workspace__slug="demo", source__kind=system.kind, is_active=True
    ).values_list("pk", flat=True):
        accepted += poll_flow(flow_id)
    return accepted


def replay_requests(
    system: DemoSystem,
    base_url: str,
    token: str,
    session: requests.Session,
    requests_: Sequence[RecordedRequest] | None = None,
) -> list[tuple[str, int]]:
    """POST the system's recorded requests (or those of them given) to its flow's webhook;
    (label, status) for each."""
    answers = []
    for recorded in system.requests() if requests_ is None else requests_:
        url = f"{base_url}/hooks/{token}/"
        if recorded.query_string:
            url += f"?{recorded.query_string}"
        response = session.post(
            url,
            data=recorded.body,
            headers={**recorded.headers, "Content-Type": recorded.content_type},
            timeout=30,
        )
        answers.append((recorded.label, response.status_code))
    return answers
