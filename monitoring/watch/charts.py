"""The flows page's charts: the figures as JSON for uPlot (drawn by `static/js/charts.js`, with
time axes, units chosen from the data and values on hover), and the same figures as a sentence
and a table, which is what a screen reader or a browser without JavaScript gets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from monitoring.models import FlowSample
from monitoring.watch.flow_health import LatencyBar, fmt_seconds


@dataclass
class Chart:
    """One chart: `data` for the script (times in Unix seconds), `summary` and `rows` for text."""

    kind: str
    title: str
    data: dict[str, Any]
    summary: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    @property
    def data_id(self) -> str:
        return f"chart-{self.kind}-data"


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def latency(bars: Sequence[LatencyBar]) -> Chart | None:
    """Average latency per hour of delivery, split into source delay, queue and DotDigital time."""
    if not bars:
        return None
    worst = max(bars, key=lambda b: b.total)
    delivered = sum(b.count for b in bars)
    mean = sum(b.total * b.count for b in bars) / delivered if delivered else 0.0
    parts = {
        "source delay": worst.source,
        "queue time": worst.queue,
        "DotDigital": worst.dotdigital,
    }
    biggest = max(parts, key=lambda k: parts[k])
    summary = (
        f"{delivered} event{'s' if delivered != 1 else ''} delivered in the last 24 h, "
        f"{fmt_seconds(mean)} on average; the slowest hour was {worst.hour:%H:00} UTC at "
        f"{fmt_seconds(worst.total)} (mostly {biggest})."
    )
    return Chart(
        kind="latency",
        title="Average latency per hour, split into source delay, queue time and DotDigital time",
        data={
            "x": [_epoch(b.hour) for b in bars],
            "source": [round(b.source, 3) for b in bars],
            "queue": [round(b.queue, 3) for b in bars],
            "dotdigital": [round(b.dotdigital, 3) for b in bars],
            "count": [b.count for b in bars],
        },
        summary=summary,
        headers=["Hour (UTC)", "Delivered", "Source delay", "Queue time", "DotDigital", "Total"],
        rows=[
            [
                f"{b.hour:%H:00}",
                str(b.count),
                fmt_seconds(b.source),
                fmt_seconds(b.queue),
                fmt_seconds(b.dotdigital),
                fmt_seconds(b.total),
            ]
            for b in bars
        ],
    )


def backlog(points: Sequence[FlowSample]) -> Chart | None:
    """Events waiting, sampled once a minute; the table gives each hour's highest and last."""
    if len(points) < 2:
        return None
    peak = max(points, key=lambda p: p.backlog)
    last = points[-1]
    summary = (
        f"{last.backlog} event{'s' if last.backlog != 1 else ''} waiting at {last.at:%H:%M} UTC; "
        f"the most in the last 24 h was {peak.backlog} at {peak.at:%H:%M} UTC."
    )
    hours: dict[datetime, list[int]] = {}
    for p in points:
        hours.setdefault(p.at.replace(minute=0, second=0, microsecond=0), []).append(p.backlog)
    return Chart(
        kind="backlog",
        title="Events waiting to be delivered, sampled each minute",
        data={"x": [_epoch(p.at) for p in points], "backlog": [p.backlog for p in points]},
        summary=summary,
        headers=["Hour (UTC)", "Most waiting", "Last sample"],
        rows=[[f"{h:%H:00}", str(max(v)), str(v[-1])] for h, v in hours.items()],
    )


def render(chart: Chart | None, empty: str) -> SafeString:
    if chart is None:
        return mark_safe(f'<p class="empty">{empty}</p>')  # noqa: S308 (a constant of ours)
    return render_to_string("monitoring/_chart.html", {"chart": chart})


def latency_chart(bars: Sequence[LatencyBar]) -> SafeString:
    return render(latency(bars), "No deliveries in the last 24 hours.")


def backlog_chart(points: Sequence[FlowSample]) -> SafeString:
    return render(backlog(points), "Not enough samples yet (one a minute).")
