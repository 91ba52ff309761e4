"""The shapes the API reads and answers (pydantic, through django-ninja): every one is in the
OpenAPI document. Times are ISO 8601 in UTC; durations are seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import AfterValidator, StringConstraints


# No database stores NUL or a lone surrogate: such input is refused (422), never a 500.
def _no_surrogate(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("the text is not Unicode (a lone surrogate)") from None
    return value


Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$"), AfterValidator(_no_surrogate)]
# Row ids: within a 64-bit integer, so no lookup overflows the database.
MAX_ID = 2**63 - 1


def _utc(value: datetime) -> datetime:
    """A time without a zone is UTC; one that cannot be written in UTC is refused."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


UtcTime = Annotated[datetime, AfterValidator(_utc)]


class ErrorOut(Schema):
    """Every error: a code a program can branch on, a sentence for a person."""

    error: str = Field(examples=["not_found"])
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For `invalid`: each input that was refused, and why."
    )


class Page(Schema):
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


# -- flows and events ---------------------------------------------------------------------------


class LaneLatency(Schema):
    lane: str = Field(description="realtime or bulk")
    delivered: int
    p50: float | None
    p95: float | None


class Latency(Schema):
    p50_1h: float | None
    p95_1h: float | None
    p50_24h: float | None
    p95_24h: float | None
    by_lane_1h: list[LaneLatency] = Field(
        default_factory=list, description="The last hour's deliveries of each lane with any."
    )


class FlowOut(Schema):
    id: int
    name: str
    is_active: bool
    state: str = Field(description="paused, failing, stalled, lagging or healthy")
    reasons: list[str]
    latency_seconds: Latency
    delivered_1h: int
    delivered_24h: int
    backlog: int = Field(description="Events waiting to be delivered (backfill apart).")
    held: int
    oldest_waiting_at: datetime | None
    oldest_waiting_seconds: float | None
    backfill_waiting: int
    received_24h: int
    failed_24h: int
    error_rate_24h: float | None
    last_event_in: datetime | None
    last_event_out: datetime | None
    open_alerts: list[int]


class FlowList(Schema):
    items: list[FlowOut]


class EventOut(Schema):
    id: int
    flow_id: int | None
    event_type: str
    entity_type: str
    entity_key: str
    source_system: str
    source_event_id: str
    state: str
    lane: str
    reason: str
    hold: str
    failed_kind: str
    order_ref: str
    is_backfill: bool
    occurred_at: datetime
    received_at: datetime
    staged_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    latency_seconds: float | None


class EventPage(Page):
    items: list[EventOut]


class StepOut(Schema):
    at: datetime | None
    what: str
    kind: str
    detail: str


class OperationOut(Schema):
    id: int
    kind: str
    record_key: str
    state: str
    version: int
    attempts: int
    via: str
    sent_at: datetime | None
    delivered_at: datetime | None
    error_code: str
    error_text: str


class EventDetail(EventOut):
    envelope: dict[str, Any]
    timeline: list[StepOut]
    operations: list[OperationOut]


# -- exceptions ---------------------------------------------------------------------------------


class GroupOut(Schema):
    id: int
    kind: str
    title: str
    state: str
    team: str | None
    assignee: str | None
    flow_key: str
    flow_label: str
    subject_label: str
    order_number: str
    sku: str
    email: str
    is_regression: bool
    first_seen: datetime
    last_seen: datetime
    occurrence_count: int
    open_count: int
    snoozed_until: datetime | None
    closed_at: datetime | None


class GroupPage(Page):
    items: list[GroupOut]


class OccurrenceOut(Schema):
    id: int
    event_key: str
    stage: str
    message: str
    state: str
    source_event_id: str
    order_number: str
    sku: str
    email: str
    times_seen: int
    first_seen: datetime
    last_seen: datetime


class ActivityOut(Schema):
    id: int
    kind: str
    actor: str | None = Field(description="A person's username or a key's name; null: Syncdesk.")
    note: str
    before: dict[str, Any]
    after: dict[str, Any]
    created: datetime


class GroupDetail(GroupOut):
    occurrences: list[OccurrenceOut] = Field(description="The latest, at most 500.")
    history: list[ActivityOut]


class ActionIn(Schema):
    note: Text = Field(default="", max_length=4000)
    assignee: Text | None = Field(
        default=None, max_length=150, description="assign: a username; null unassigns."
    )
    until: UtcTime | None = Field(default=None, description="snooze: until this time.")
    more: int | None = Field(
        default=None, ge=1, le=1_000_000, description="snooze: until this many more occurrences."
    )


class FixIn(Schema):
    values: dict[Text, Text] = Field(
        description="The kind's fix form: catalogue_sku (sku_mapping_gap), email "
        "(contact_without_email), data_field (field_mapping_missing), else value."
    )


class ActionOut(Schema):
    message: str
    group: GroupOut
    activity: ActivityOut | None


# -- reconciliation and alerts ------------------------------------------------------------------


class RunOut(Schema):
    id: int
    flow_id: int
    state: str
    sample: int
    started_at: datetime
    finished_at: datetime | None
    total: int | None
    checked: int
    matched: int
    mismatched: int
    missing: int
    source_orders: int | None
    error: str
    source_error: str


class RunPage(Page):
    items: list[RunOut]


class DifferenceOut(Schema):
    id: int
    kind: str
    subject: str
    field: str
    engine_value: str
    dotdigital_value: str
    source_value: str
    team: str
    repaired_at: datetime | None


class RunDetail(RunOut):
    differences: list[DifferenceOut] = Field(description="At most 500.")


class AlertOut(Schema):
    id: int
    flow_id: int
    kind: str
    state: str
    team: str
    message: str
    triggered_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    escalated_at: datetime | None
    resolved_at: datetime | None


class AlertPage(Page):
    items: list[AlertOut]


class AlertChangeOut(Schema):
    kind: str
    at: datetime
    actor: str | None
    note: str


class AlertDetail(AlertOut):
    changes: list[AlertChangeOut]
