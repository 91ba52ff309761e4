"""Shared by the delivery, confirmation and consent tests: a DotDigital sandbox process, a
workspace with a demo ERP flow and a demo WMS flow delivering to it, and a pump that runs the
engine (staging, then each lane's planning, sending and confirmation) until it has settled.

Test modules import the fixtures by name: `from tests.monitoring.delivery_support import *`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from accounts.models import Workspace
from connectors.models import Connection
from monitoring.models import Flow, Operation, SourceEvent
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from tests.connectors.dotdigital.conftest import SandboxProcess
from tests.factories import make_connection, make_workspace

__all__ = [
    "Engine",
    "dd",
    "dd_process",
    "engine",
    "event",
    "iso",
]

ERP = ("demo-erp", "erp-main")
WMS = ("demo-wms", "wh-1")


@pytest.fixture(scope="session")
def dd_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = SandboxProcess(tmp_path_factory.mktemp("dd-delivery"))
    process.start()
    try:
        yield process
    finally:
        process.stop()
        process.api.close()


@pytest.fixture
def dd(dd_process: SandboxProcess) -> SandboxProcess:
    """The sandbox, reset to an empty account with the fast profile (imports apply at once)."""
    if dd_process.process is None or dd_process.process.poll() is not None:
        dd_process.start(dd_process.port)
    dd_process.reset()
    dd_process.faults()
    dd_process.account()
    return dd_process


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(
    source: tuple[str, str],
    event_type: str,
    entity: str,
    native_id: str,
    data: dict[str, Any],
    *,
    at: datetime | None = None,
    email: str | None = None,
    guest: bool = False,
    customer_id: str | None = None,
    links: dict[str, Any] | None = None,
    source_ref: str | None = None,
    quality: str = "exact",
) -> dict[str, Any]:
    """A canonical event (sync.event/v1) as a source posts it."""
    moment = iso(at or datetime.now(UTC))
    system, account = source
    kind = entity.split(":", 1)[0]
    identity: dict[str, Any] = {"quality": "none"}
    if email is not None:
        identity = {
            "email": email.strip().lower(),
            "email_raw": email,
            "source_customer_id": customer_id,
            "is_guest": guest,
            "quality": "email",
        }
    return {
        "schema": "sync.event/v1",
        "event_type": event_type,
        "event_id": f"{system}-{native_id}",
        "source": {"system": system, "account": account, "channel": "web-uk", "via": None},
        "source_event_id": f"{system}:{native_id}",
        "source_event_id_kind": "native",
        "occurred_at": moment,
        "occurred_at_quality": quality,
        "source_updated_at": moment,
        "entity": {
            "type": kind,
            "key": f"{system}:{account}:{entity}",
            "source_id": entity.rsplit(":", 1)[-1],
            "source_ref": source_ref,
        },
        "links": links or {},
        "identity": identity,
        "data": data,
    }


@dataclass
class Engine:
    workspace: Workspace
    destination: Connection
    erp: Connection
    wms: Connection
    erp_flow: Flow
    wms_flow: Flow
    tokens: dict[str, str]
    sandbox: SandboxProcess
    web: Client

    def post(self, source: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """POST events to the source's public webhook, as the source would."""
        response = self.web.post(
            f"/hooks/{self.tokens[source]}/",
            data=json.dumps({"events": events}),
            content_type="application/json",
        )
        assert response.status_code == 202, response.content
        body: dict[str, Any] = response.json()
        return body

    def pump(self, rounds: int = 40) -> None:
        """Run the engine until nothing is left to stage, plan, send or confirm."""
        from monitoring.pipeline.lanes import run_lane
        from monitoring.pipeline.staging.run import run_staging

        for _ in range(rounds):
            run_staging()
            for lane in ("realtime", "bulk"):
                run_lane(self.destination.pk, lane, time_budget=5.0, linger=0.0, idle_sleep=0.02)
            self.destination.refresh_from_db()
            busy = (
                SourceEvent.objects.filter(
                    state__in=(SourceEvent.State.RECEIVED, SourceEvent.State.READY)
                ).exists()
                or Operation.objects.filter(state__in=("pending", "sending", "sent")).exists()
            )
            if not busy or self.destination.is_paused:
                return
            # Backoffs (a transient failure) come due without waiting.
            Operation.objects.filter(state="pending").update(
                next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)
            )

    def contact(self, email: str) -> dict[str, Any] | None:
        response = self.sandbox.api.get(f"{self.sandbox.url}/contacts/v3/email/{email}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def records(self, email: str, collection: str = "Orders") -> dict[str, dict[str, Any]]:
        response = self.sandbox.api.get(
            f"{self.sandbox.url}/insightData/v3/contacts/email/{email}/{collection}"
        )
        if response.status_code == 404:
            return {}
        assert response.status_code == 200, response.text
        return {item["key"]: item["json"] for item in response.json()["_items"]}


@pytest.fixture
def engine(db: Any, dd: SandboxProcess, tmp_path: Path, monkeypatch: Any) -> Engine:
    from monitoring.pipeline import deliver

    # Bulk imports go as soon as anything is due (production waits to fill a batch).
    monkeypatch.setattr(deliver, "BULK_MAX_WAIT", timedelta(0))
    workspace = make_workspace("northwind", currency="GBP")
    destination = make_connection(
        workspace,
        "dotdigital",
        name="DotDigital",
        credentials={"api_user": dd.auth[0], "password": dd.auth[1]},
        options={"api_endpoint": dd.url, "discovery_url": dd.url},
    )
    erp = make_connection(workspace, "canonical", name="Demo ERP")
    wms = make_connection(workspace, "canonical", name="Demo WMS")
    tokens = {"erp": erp.rotate_webhook_token(), "wms": wms.rotate_webhook_token()}
    erp_flow = Flow.objects.create(
        workspace=workspace,
        name="Demo ERP → DotDigital",
        source=erp,
        destination=destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
        masters_products=True,
    )
    wms_flow = Flow.objects.create(
        workspace=workspace,
        name="Demo WMS → DotDigital",
        source=wms,
        destination=destination,
        join_key=Flow.JoinKey.CHANNEL_ORDER_REF,
    )
    for flow in (erp_flow, wms_flow):
        install_defaults(flow)
        mark_backfill_complete(flow, by="test")
    return Engine(workspace, destination, erp, wms, erp_flow, wms_flow, tokens, dd, Client())
