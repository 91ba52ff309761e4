"""The adapter interface every source kind implements, and its one error type.

An adapter knows the source's wire format and API; it never touches the engine's rows. It returns
plain canonical event dicts; the engine validates them against the published schema, deduplicates
and stores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from connectors.models import Connection

Event = dict[str, Any]


class SourceError(Exception):
    """A call to the source failed. `permanent` errors (bad credentials, a record that does not
    exist) are not retried; the rest are, with backoff."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class NotSupported(SourceError):
    def __init__(self, what: str) -> None:
        super().__init__(f"This source does not support {what}.", permanent=True)


@dataclass(frozen=True)
class WebhookRequestData:
    body: bytes
    content_type: str
    headers: Mapping[str, str]


@dataclass
class ItemError:
    """Why one item of a webhook body could not become an event: a path and a message."""

    index: int | None
    errors: list[dict[str, str]]


@dataclass
class WebhookItems:
    """What a webhook body holds: candidate events (to validate), id-only notifications (to fetch)
    and items that could not be read at all."""

    events: list[Event] = field(default_factory=list)
    #: each event's index in the body, for the per-event answer
    positions: list[int] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    backfill: bool = False


@dataclass
class Page:
    """One page of a poll or backfill: its events, the cursor to resume from, and whether the
    source has nothing newer (a poller reaching the present completes the flow's backfill)."""

    events: list[Event]
    cursor: str
    reached_present: bool = False


class SourceAdapter:
    """One source kind. Subclasses override what their source supports."""

    kind: ClassVar[str] = ""
    #: the source pushes only ids: webhooks are stored as notifications and fetched later
    sends_ids_only: ClassVar[bool] = False
    #: the source can be paged by the poller (otherwise it is push-only)
    can_poll: ClassVar[bool] = False

    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        """Split a webhook body into candidate events (or notifications)."""
        raise NotSupported("webhooks")

    def fetch(self, connection: Connection, notification: Mapping[str, Any]) -> list[Event]:
        """GET the records a notification names and return them as canonical events."""
        raise NotSupported("fetching notified records")

    def poll(self, connection: Connection, cursor: str) -> Page:
        """The events changed since `cursor` (empty: from the start of the source's history)."""
        raise NotSupported("polling")

    def backfill(self, connection: Connection, start: datetime, end: datetime, cursor: str) -> Page:
        """One page of history between `start` and `end`."""
        raise NotSupported("backfill")

    def test_connection(self, connection: Connection) -> str:
        """Check the credentials and return a line for the person; raises SourceError."""
        raise NotSupported("testing the connection")

    def write_back_opt_out(
        self, connection: Connection, email: str, opted_out_at: datetime
    ) -> None:
        """Record in the source of truth that this person opted out in DotDigital."""
        raise NotSupported("writing opt-outs back")
