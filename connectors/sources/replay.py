"""A recording replayed now: `make demo`'s recorded sources move every timestamp they hold to the
present before serving or posting it (their `demo.py` files, monitoring/demo.py plays them).

Vendors' recorded payloads keep the times they were captured at (Brightpearl's from 2020 to 2025):
replayed as they are, each event would arrive years after it happened, which is lag. A
`ReplayClock` is built from every timestamp one recording holds, its webhook bodies and its API's
records together, so the API process and the replay process map each moment alike: the newest
lands at the replay's anchor and each earlier one keeps its gap to the next, a gap over `MAX_GAP`
counting as `MAX_GAP`. Years of history play as a minute or two, no two recorded moments trade
places or merge, and moments close together keep their spacing. Each timestamp is written back
in its own form (its precision, its offset or none, .NET's `/Date(ms)/`), so the adapter reads it
as it reads the vendor's.

The anchor is `DEMO_REPLAY_AT` (ISO 8601: `manage.py run_demo` sets it for every demo process, so
the recorded APIs and the replay share one present), else now. `run_demo` sets it `REPLAY_LEAD`
ahead, and the recording plays in time up to it: each webhook request is posted when the newest
moment it holds comes (`RecordedRequest.at`) and a recorded API serves a record once its own has
(`revealed`), so each event reaches Syncdesk as it happens, as a live source's would.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

ANCHOR_ENV = "DEMO_REPLAY_AT"
MAX_GAP = timedelta(seconds=1)
# How far ahead of the replay's start its present is: every recording's moments fit within it
# (tests/connectors/sources/test_demo_replay.py), so the oldest still happens after the start.
REPLAY_LEAD = timedelta(seconds=60)
SECOND = timedelta(seconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Seconds required: a time without them could not keep a shifted second, so it is left alone.
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?P<sep>[T ])(?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<offset>Z|[+-]\d{2}:?\d{2})?$"
)
_DOTNET = re.compile(r"^/Date\((?P<ms>-?\d+)(?P<zone>[+-]\d{4})?\)/$")

T = TypeVar("T")


def replay_anchor() -> datetime:
    """The present the demo replays at: `DEMO_REPLAY_AT`, else now; whole seconds, UTC."""
    text = os.environ.get(ANCHOR_ENV, "").strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if text else datetime.now(UTC)
    except ValueError:
        raise ValueError(f"{ANCHOR_ENV} is not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class _Stamp:
    """A timestamp as written: the instant it names, and how to write another in its form."""

    instant: datetime
    write: Callable[[datetime], str]


def _read(text: str, naive_zone: tzinfo) -> _Stamp | None:
    """The timestamp `text` writes, or None when it is none (a date alone is none: no instant)."""
    dotnet = _DOTNET.match(text)
    if dotnet:
        zone = dotnet["zone"] or ""
        return _Stamp(
            EPOCH + timedelta(milliseconds=int(dotnet["ms"])),
            lambda moment: f"/Date({(moment - EPOCH) // timedelta(milliseconds=1)}{zone})/",
        )
    iso = _ISO.match(text)
    if iso is None:
        return None
    fraction, offset = iso["fraction"] or "", iso["offset"] or ""
    micro = (fraction[:6]).ljust(6, "0") if fraction else "000000"
    try:
        parsed = datetime.fromisoformat(
            f"{iso['date']}T{iso['time']}.{micro}{offset.replace('Z', '+00:00')}"
        )
    except ValueError:
        return None
    zone = parsed.tzinfo

    def write(moment: datetime) -> str:
        local = moment.astimezone(zone) if zone else moment.astimezone(naive_zone)
        digits = f"{local.microsecond:06d}"[: len(fraction)] + fraction[6:]
        return (
            local.strftime(f"%Y-%m-%d{iso['sep']}%H:%M:%S")
            + (f".{digits}" if fraction else "")
            + offset
        )

    instant = parsed if zone else parsed.replace(tzinfo=naive_zone)
    return _Stamp(instant.astimezone(UTC), write)


def _strings(document: Any) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for value in document.values():
            yield from _strings(value)
    elif isinstance(document, list | tuple):
        for value in document:
            yield from _strings(value)


def _whole_seconds(delta: timedelta) -> timedelta:
    return (delta // SECOND) * SECOND


class ReplayClock:
    """Moves the timestamps of one recording's documents (decoded JSON) to `anchor`, in order."""

    def __init__(
        self, documents: Iterable[Any], *, anchor: datetime, naive_zone: tzinfo = UTC
    ) -> None:
        self.naive_zone = naive_zone
        instants = {
            stamp.instant
            for document in documents
            for text in _strings(document)
            if (stamp := _read(text, naive_zone)) is not None
        }
        # Newest first: each offset is the later one's, plus whatever of the gap is over MAX_GAP.
        # Offsets are whole seconds, so a time keeps its fraction exactly as written.
        self.offsets: dict[datetime, timedelta] = {}
        offset, later = timedelta(0), None
        for instant in sorted(instants, reverse=True):
            if later is None:
                offset = _whole_seconds(anchor - instant)
            elif later - instant > MAX_GAP:
                offset += _whole_seconds(later - instant - MAX_GAP)
            self.offsets[instant] = offset
            later = instant

    def shift(self, document: T) -> T:
        """`document` with each of its timestamps moved (a new document; keys are kept)."""
        return self._shift(document)  # type: ignore[no-any-return]

    def _shift(self, document: Any) -> Any:
        if isinstance(document, str):
            stamp = _read(document, self.naive_zone)
            if stamp is None or stamp.instant not in self.offsets:
                return document
            return stamp.write(stamp.instant + self.offsets[stamp.instant])
        if isinstance(document, dict):
            return {key: self._shift(value) for key, value in document.items()}
        if isinstance(document, list):
            return [self._shift(value) for value in document]
        return document

    def newest(self, document: Any) -> datetime | None:
        """The latest moment a (shifted) document names: when its source would have sent it."""
        return newest(document, self.naive_zone)

    def shift_json(self, body: bytes) -> bytes:
        """A JSON body with its timestamps moved."""
        return json.dumps(self.shift(json.loads(body))).encode()


def newest(document: Any, naive_zone: tzinfo = UTC) -> datetime | None:
    """The latest moment any timestamp in `document` names (decoded JSON), or None."""
    instants = [
        stamp.instant
        for text in _strings(document)
        if (stamp := _read(text, naive_zone)) is not None
    ]
    return max(instants, default=None)


def revealed(document: Any, now: datetime, naive_zone: tzinfo = UTC) -> Any:
    """`document` as a source would answer at `now`: every record (an object in a list) whose
    newest timestamp is still to come left out, at any depth."""
    if isinstance(document, dict):
        return {key: revealed(value, now, naive_zone) for key, value in document.items()}
    if isinstance(document, list):
        return [
            revealed(item, now, naive_zone)
            for item in document
            if not isinstance(item, dict) or (newest(item, naive_zone) or now) <= now
        ]
    return document
