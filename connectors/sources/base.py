"""The adapter interface every source kind implements, and its one error type.

An adapter knows the source's wire format and API; it never touches the engine's rows. It returns
plain canonical event dicts; the engine validates them against the published schema, deduplicates
and stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol
from urllib.parse import parse_qs

if TYPE_CHECKING:
    # connectors.models builds Connection.Kind from the registry, which names the adapters.
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
    #: the URL's query string as sent (`callback=despatched`): some sources (Mintsoft's per-order
    #: callback URLs) say what happened only there
    query_string: str = ""

    @cached_property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed: name → its values, in order."""
        return parse_qs(self.query_string, keep_blank_values=True)


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
    #: what the operators should hear about although no event failed (an unknown status, a record
    #: skipped): `{"code", "message", "subject"}`; the engine files each in the inbox
    warnings: list[dict[str, str]] = field(default_factory=list)


class Fetched(list[Event]):
    """What `SourceAdapter.fetch` returns: the events, and `warnings` as a `Page` has them."""

    def __init__(self, events: Iterable[Event] = (), warnings: Iterable[dict[str, str]] = ()):
        super().__init__(events)
        self.warnings: list[dict[str, str]] = list(warnings)


def warning(code: str, message: str, subject: str = "") -> dict[str, str]:
    """One warning for the operators. The inbox groups by code and message (so keep record ids
    out of the message) and counts an occurrence per subject (e.g. the order number)."""
    return {"code": code, "message": message, "subject": subject}


#: data signal → (warning code, message); `unknown_status` is the code every adapter uses
SIGNALS = {
    "unmapped_status": (
        "unknown_status",
        "{system} status {status} is not in the connection's status map: orders in it keep "
        "their status until it is mapped.",
    ),
    "source_error": (
        "source_error",
        "{system} put orders in status {status}: they failed to import or process there "
        "(Syncdesk leaves their status unchanged).",
    ),
}


def signal_warnings(events: Iterable[Event]) -> list[dict[str, str]]:
    """The warnings the events' data signals (`data.signal`: an unmapped status, an error status
    at the source) ask for, one per event."""
    found = []
    for event in events:
        data = event.get("data") if isinstance(event, Mapping) else None
        if not isinstance(data, Mapping) or not data.get("signal"):
            continue
        signal = data["signal"]
        source = event.get("source") or {}
        code, template = SIGNALS.get(
            str(signal),
            (str(signal), "{system} sent a record Syncdesk could not apply ({signal})."),
        )
        status = data.get("source_status_raw") or ""
        message = template.format(
            system=str(source.get("system") or "The source").capitalize(),
            status=status or "(none)",
            signal=signal,
        )
        subject = str(
            data.get("order_number") or (event.get("entity") or {}).get("source_id") or ""
        )
        found.append(warning(code, message, subject))
    return found


@dataclass(frozen=True)
class Setting:
    """One setting of a connection, as the connection form asks for it.

    Kept in `credentials` (encrypted) or `options` (plain JSON); a secret is never rendered back;
    changing a `guards_secrets` setting (an address the secrets are sent to) requires the secrets
    to be typed again. Adapters read the same keys: `connection.credentials["password"]`."""

    name: str
    label: str
    store: Literal["credentials", "options"]
    secret: bool = False
    required: bool = True
    kind: Literal["text", "url", "email", "code"] = "text"
    help_text: str = ""
    initial: str = ""
    #: changing it requires typing the secrets again (they are sent to it)
    guards_secrets: bool = False


class SettingsForm(Protocol):
    """The connection form as `SourceAdapter.validate_settings` sees it."""

    def given(self, name: str) -> bool:
        """The setting is typed in, or is a secret left blank that keeps its stored value."""
        ...

    def has_error(self, field: str) -> bool: ...

    def add_error(self, field: str | None, error: str) -> None: ...


@dataclass(frozen=True)
class RecordedRequest:
    """A request a source sent to its webhook once, replayed by `make demo` (monitoring/demo.py)
    at `at` (the newest moment it holds, once moved to the replay's present; None: at the
    present itself)."""

    body: bytes
    query_string: str = ""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    label: str = ""
    at: datetime | None = None


#: A recorded source API for `make demo`: (method, path, query, headers) → (status, JSON body,
#: headers to answer with).
RecordedApi = Callable[
    [str, str, Mapping[str, str], Mapping[str, str]], tuple[int, Any, Mapping[str, str]]
]


@dataclass(frozen=True)
class Recording:
    """How a recorded source plays in `make demo` (monitoring/demo.py runs it): the connection's
    name and settings, the flow's join key, the webhook requests to POST once and, for a source
    the engine pulls from, the recorded API to serve (`options(base_url)` points the connection
    at it). `polls` has the demo page the flow as the poller does; `poll_first` before posting
    the requests (else after): whichever brings an order first makes it."""

    name: str
    join_key: str
    requests: Callable[[], Sequence[RecordedRequest]]
    credentials: Callable[[], dict[str, Any]] = dict
    options: Callable[[str], dict[str, Any]] = lambda base_url: {}
    api: Callable[[], RecordedApi] | None = None
    polls: bool = False
    poll_first: bool = True


class SourceAdapter:
    """One source kind. Subclasses override what their source supports."""

    kind: ClassVar[str] = ""
    #: what the connection form asks for (connectors/forms.py)
    settings: ClassVar[tuple[Setting, ...]] = ()
    #: the source pushes only ids: webhooks are stored as notifications and fetched later
    sends_ids_only: ClassVar[bool] = False
    #: the source can be paged by the poller (otherwise it is push-only)
    can_poll: ClassVar[bool] = False

    def validate_settings(self, form: SettingsForm) -> None:
        """Check the settings together, once each is valid on its own, and put any error on the
        form's field it is about. Most kinds have nothing to check."""

    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        """Split a webhook body into candidate events (or notifications)."""
        raise NotSupported("webhooks")

    def fetch(self, connection: Connection, notification: Mapping[str, Any]) -> list[Event]:
        """GET the records a notification names and return them as canonical events (a
        `Fetched` to carry warnings for the operators too)."""
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
