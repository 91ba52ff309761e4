"""The engine's rows, one module for each part of an event's way:

- `flows`: what a workspace configures (flows, schedules, field mappings, SKU aliases);
- `events`: what arrived (webhook requests, notifications, canonical events);
- `state`: the merged state staging keeps (customers, orders, shipments, refunds, products, stock);
- `outbox`: what is to be written to DotDigital and what Syncdesk knows of its side;
- `watch`: flow health, alerts, reconciliation and opt-out write-backs.

Django finds models through this package, so every model module is imported here.
"""

from __future__ import annotations

from monitoring.models.events import (
    Lease,
    SourceEvent,
    SourceEventQuerySet,
    SourceNotification,
    WebhookRequest,
)
from monitoring.models.flows import (
    DEFAULT_DISPATCHED_LIST,
    DEFAULT_RECENT_BUYERS_LIST,
    FieldMapping,
    Flow,
    Schedule,
    SkuAlias,
    WorkerHeartbeat,
)
from monitoring.models.outbox import (
    OPEN_STATES,
    DeliveryBatch,
    DestinationCache,
    DirectEnrolment,
    LaneRunner,
    ListMembership,
    Operation,
    OperationEvent,
    ProgramEnrolment,
    Suppression,
)
from monitoring.models.state import (
    Customer,
    CustomerKey,
    Order,
    OrderKey,
    Product,
    Refund,
    Shipment,
    StockDelta,
    StockLevel,
)
from monitoring.models.watch import (
    Alert,
    AlertChange,
    AlertNotice,
    FlowSample,
    FlowWatch,
    OptOutWriteBack,
    ReconciliationDifference,
    ReconciliationRun,
)

__all__ = [
    "DEFAULT_DISPATCHED_LIST",
    "DEFAULT_RECENT_BUYERS_LIST",
    "OPEN_STATES",
    "Alert",
    "AlertChange",
    "AlertNotice",
    "Customer",
    "CustomerKey",
    "DeliveryBatch",
    "DestinationCache",
    "DirectEnrolment",
    "FieldMapping",
    "Flow",
    "FlowSample",
    "FlowWatch",
    "LaneRunner",
    "Lease",
    "ListMembership",
    "Operation",
    "OperationEvent",
    "OptOutWriteBack",
    "Order",
    "OrderKey",
    "Product",
    "ProgramEnrolment",
    "ReconciliationDifference",
    "ReconciliationRun",
    "Refund",
    "Schedule",
    "Shipment",
    "SkuAlias",
    "SourceEvent",
    "SourceEventQuerySet",
    "SourceNotification",
    "StockDelta",
    "StockLevel",
    "Suppression",
    "WebhookRequest",
    "WorkerHeartbeat",
]
