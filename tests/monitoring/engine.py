"""Builders for the engine's tests: flows with their webhook tokens, canonical events, posting."""

from __future__ import annotations

import itertools
import json
from typing import Any

from django.test import Client

from accounts.models import Workspace
from monitoring.models import Flow
from monitoring.pipeline.flows import install_defaults
from monitoring.pipeline.staging.run import run_staging
from tests.factories import make_connection

_seq = itertools.count(1)


class Source:
    """A source connection with its flow and its token: what a WMS or ERP posts to."""

    def __init__(self, workspace: Workspace, system: str, **flow_fields: Any) -> None:
        self.workspace = workspace
        self.system = system
        self.account = f"{system}-acct"
        self.connection = make_connection(workspace, "canonical", name=f"{system} feed")
        self.token = self.connection.rotate_webhook_token()
        self.flow = Flow.objects.create(
            workspace=workspace,
            name=f"{system} → DotDigital",
            source=self.connection,
            **flow_fields,
        )
        install_defaults(self.flow)

    @property
    def url(self) -> str:
        return f"/hooks/{self.token}/"

    def post(self, body: Any, client: Client | None = None, **extra: Any) -> Any:
        client = client or Client()
        return client.post(
            self.url,
            data=body if isinstance(body, (bytes, str)) else json.dumps(body),
            content_type=extra.pop("content_type", "application/json"),
            **extra,
        )

    def event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        at: str = "2026-05-01T10:00:00Z",
        entity: tuple[str, str] | None = None,
        identity: dict[str, Any] | None = None,
        links: dict[str, Any] | None = None,
        source_event_id: str | None = None,
        updated_at: str | None = None,
    ) -> dict[str, Any]:
        entity_type, entity_key = entity or (
            event_type.split(".")[0],
            f"{self.system}:{next(_seq)}",
        )
        event: dict[str, Any] = {
            "schema": "sync.event/v1",
            "event_type": event_type,
            "source": {"system": self.system, "account": self.account},
            "source_event_id": source_event_id or f"{self.system}:{next(_seq)}",
            "occurred_at": at,
            "source_updated_at": updated_at or at,
            "entity": {"type": entity_type, "key": entity_key},
            "data": data,
        }
        if identity is not None:
            event["identity"] = identity
        if links is not None:
            event["links"] = links
        return event

    # Shapes of the common events.

    def order(
        self,
        number: str,
        *,
        email: str | None = "jo@example.com",
        total: str = "30.00",
        lines: list[dict[str, Any]] | None = None,
        currency: str = "GBP",
        guest: bool = False,
        version: str = "2026-05-01T10:00:00Z",
        event_type: str = "order.created",
        status: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        lines = lines or [
            {
                "line_key": "1",
                "sku": "TEE-RED-M",
                "quantity": 1,
                "line_total": {"amount": total, "currency": currency},
            }
        ]
        data = {
            "order_key": f"{self.system}:order:{number}",
            "order_number": number,
            "placed_at": version,
            "currency": currency,
            "lines": lines,
            "totals": {"grand_total": {"amount": total, "currency": currency}},
            "status": status
            or {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
        }
        if event_type == "order.updated":
            data["revision"] = version
        identity = {"email": email, "is_guest": guest} if email is not None else {"quality": "none"}
        return self.event(
            event_type,
            data,
            at=version,
            entity=("order", f"{self.system}:order:{number}"),
            identity=identity,
            **kwargs,
        )

    def dispatch(
        self, number: str, *, at: str = "2026-05-02T09:00:00Z", part: int = 1, **kwargs: Any
    ):
        key = f"{self.system}:shipment:{number}-{part}"
        return self.event(
            "shipment.dispatched",
            {
                "shipment_key": key,
                "order_key": f"{self.system}:order:{number}",
                "dispatched_at": at,
                "lines": [{"sku": "TEE-RED-M", "quantity": 1}],
                "tracking_numbers": kwargs.pop("tracking", []),
            },
            at=at,
            entity=("shipment", key),
            links={"order_number": number},
            **kwargs,
        )

    def refund(
        self, number: str, key: str, amount: str, *, at: str = "2026-05-03T09:00:00Z", **kwargs: Any
    ):
        return self.event(
            "refund.issued",
            {
                "refund_key": key,
                "order_key": f"{self.system}:order:{number}",
                "refunded_at": at,
                "amount": {"amount": amount, "currency": "GBP"},
            },
            at=at,
            entity=("refund", f"{self.system}:refund:{key}"),
            links={"order_number": number},
            **kwargs,
        )

    def product(self, sku: str, *, at: str = "2026-04-01T00:00:00Z") -> dict[str, Any]:
        return self.event(
            "product.updated",
            {"sku": sku, "product_key": f"{self.system}:product:{sku}", "status": "active"},
            at=at,
            entity=("product", f"{self.system}:product:{sku}"),
        )


def stage() -> int:
    """What a staging worker does when woken (or when the sweeper wakes it)."""
    return run_staging()
