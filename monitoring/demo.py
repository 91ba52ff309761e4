"""The demo workspace: one retailer, one person per team and an admin (make demo)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from accounts.models import Membership, Workspace
from connectors.models import Connection

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
    from eventgen import Generator
    from monitoring.models import Flow
    from monitoring.pipeline.flows import (
        install_defaults,
        mark_backfill_complete,
        mark_catalogue_loaded,
    )
    from monitoring.pipeline.ingest import ingest_events

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
