"""Mintsoft in `make demo` (monitoring/demo.py plays `RECORDING`): the recorded order callbacks to post to the
flow's webhook, and a recorded Mintsoft API for its poller (orders, returns, stock).

The payloads are the parsing tests' (tests/connectors/sources/payloads/mintsoft/, their
provenance in connectors/sources/mintsoft/README.md): the order list and the products-in-location report are
captured; the callbacks and returns are synthetic from Mintsoft's documentation. Their times,
2012 to 2026 as recorded, are replayed now (connectors/sources/replay.py): the callbacks and the
API's records through one clock, in their recorded order; Mintsoft's times without an offset are
the warehouse's local time (`ZONE`, the connection's `time_zone`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings

from connectors.sources.base import RecordedApi, RecordedRequest, Recording
from connectors.sources.replay import ReplayClock, replay_anchor

API_KEY = "demo-mintsoft-key"
CLIENT_ID = 3
ZONE = ZoneInfo("Europe/London")


def payloads() -> Path:
    return Path(settings.BASE_DIR) / "tests" / "connectors" / "sources" / "payloads" / "mintsoft"


def _load(name: str) -> Any:
    return json.loads((payloads() / name).read_text())


#: (payload, the callback its URL names), in the order the warehouse would call them
CALLBACKS = (
    ("synthetic/callback-despatched.json", "despatched"),
    ("synthetic/order-split-part2-despatched.json", "despatched"),
    ("synthetic/callback-delivered.json", "delivered"),
    ("synthetic/callback-cancelled.json", "cancelled"),
)


#: what the recorded API serves, by path (the order list is its page 1)
SERVED = {
    "/api/Order/List": "order-list-response.json",
    "/api/Order/Statuses": "order-statuses.json",
    "/api/Return/Reasons": "return-reasons.json",
    "/api/Return/SearchByDate": "synthetic/return-search-by-date.json",
    "/api/Reports/ProductsInLocationReport": "products-in-location-report.json",
}


def _clock(anchor: datetime | None) -> ReplayClock:
    """One clock for the callbacks and the records: the API and the replay run apart."""
    documents = [_load(name) for name, _ in CALLBACKS] + [_load(name) for name in SERVED.values()]
    return ReplayClock(documents, anchor=anchor or replay_anchor(), naive_zone=ZONE)


def demo_requests(anchor: datetime | None = None) -> list[RecordedRequest]:
    """The callbacks, each to `/hooks/<token>/?callback=<name>` as its ExtraCode URL says, their
    times moved to `anchor` (default: the demo's present)."""
    clock = _clock(anchor)
    shifted = [(clock.shift(_load(name)), name, callback) for name, callback in CALLBACKS]
    return [
        RecordedRequest(
            body=json.dumps(body).encode(),
            query_string=f"callback={callback}",
            label=f"{callback} callback ({name})",
            at=clock.newest(body),
        )
        for body, name, callback in shifted
    ]


def demo_credentials() -> dict[str, Any]:
    return {"api_key": API_KEY}


def demo_options(base_url: str) -> dict[str, Any]:
    return {
        "base_url": base_url,
        "client_id": CLIENT_ID,
        "returns_lookback_days": 1,
        "time_zone": ZONE.key,
    }


def demo_api(anchor: datetime | None = None) -> RecordedApi:
    """The recorded API: the order list (one page), the returns of any day, the stock report;
    their times moved to `anchor` (default: the demo's present)."""
    clock = _clock(anchor)
    answers = {path: clock.shift(_load(name)) for path, name in SERVED.items()}
    orders = answers.pop("/api/Order/List")

    def answer(
        method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, Any, Mapping[str, str]]:
        if headers.get("ms-apikey") != API_KEY:
            return 401, {"Message": "Authorization has been denied for this request."}, {}
        if path == "/api/Order/List":
            return 200, orders if str(query.get("PageNo") or "1") == "1" else [], {}
        if path in answers:
            return 200, answers[path], {}
        return 404, {"Message": f"No HTTP resource was found that matches {path}."}, {}

    return answer


RECORDING = Recording(
    name="Mintsoft (recorded)",
    join_key="order_number",
    requests=demo_requests,
    credentials=demo_credentials,
    options=demo_options,
    api=demo_api,
    polls=True,
    # The callbacks' order (with its email) before the captured list's (without one).
    poll_first=False,
)
