"""Posts generated events to a Syncdesk webhook, as a source system would."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger("eventgen")


@dataclass
class PostStats:
    requests: int = 0
    events: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)


def post_batches(
    url: str,
    batches: Iterable[list[dict[str, Any]]],
    *,
    rate: float | None = None,
    session: requests.Session | None = None,
    max_retries: int = 20,
    stats: PostStats | None = None,
) -> PostStats:
    """POST each batch as ``{"events": [...]}``; retry what a well-behaved source retries (connection
    errors, 429 and 5xx) with backoff, never a 4xx answer. ``rate`` caps events per second."""
    own_session = session is None
    session = session or requests.Session()
    stats = stats or PostStats()
    try:
        _post_all(url, batches, rate, session, max_retries, stats)
    finally:
        if own_session:
            session.close()
    return stats


def _post_all(
    url: str,
    batches: Iterable[list[dict[str, Any]]],
    rate: float | None,
    session: requests.Session,
    max_retries: int,
    stats: PostStats,
) -> None:
    started = time.monotonic()
    for batch in batches:
        body = json.dumps({"events": batch})
        for attempt in range(max_retries + 1):
            try:
                response = session.post(
                    url, data=body, headers={"Content-Type": "application/json"}, timeout=30
                )
            except requests.RequestException as exc:
                log.warning("webhook unreachable (%s); retrying", type(exc).__name__)
                stats.retries += 1
                time.sleep(min(30, 0.5 * 2**attempt))
                continue
            stats.statuses[response.status_code] = stats.statuses.get(response.status_code, 0) + 1
            if response.status_code == 429 or response.status_code >= 500:
                stats.retries += 1
                time.sleep(min(30, 0.5 * 2**attempt))
                continue
            _count_results(response, stats)
            break
        stats.requests += 1
        stats.events += len(batch)
        if rate:
            ahead = stats.events / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def _count_results(response: requests.Response, stats: PostStats) -> None:
    try:
        payload = response.json()
    except ValueError:
        return
    results = payload.get("results") if isinstance(payload, dict) else None
    for result in results or []:
        status = str(result.get("status") or result.get("result") or "unknown")
        stats.results[status] = stats.results.get(status, 0) + 1
