"""Server-side SVG charts for the flows page: no JavaScript, no CDN, readable without colour
(each series is also named in the legend and each bar has a <title> tooltip)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from monitoring.models import FlowSample
from monitoring.watch.flow_health import LatencyBar, fmt_seconds

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 200, 56, 24, 10
SERIES = (("source", "#8aa4c8", "Source delay"), ("queue", "#1f5fbf", "Queue time"),
          ("dotdigital", "#1d7a46", "DotDigital time"))  # fmt: skip


def _axis(max_value: float, label: str) -> list[str]:
    plot_h = HEIGHT - BOTTOM - TOP
    out = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" class="axis"/>',
           f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" class="axis"/>']  # fmt: skip
    for i in range(5):
        value = max_value * i / 4
        y = HEIGHT - BOTTOM - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" class="grid"/>')
        text = escape(label.format(value))
        out.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{text}</text>'
        )
    return out


def latency_chart(bars: Sequence[LatencyBar]) -> SafeString:
    """Stacked bars per hour: source delay, queue time, DotDigital time (average seconds)."""
    if not bars:
        return mark_safe('<p class="empty">No deliveries in the last 24 hours.</p>')
    top = max(b.total for b in bars) or 1.0
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(bars), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             'aria-label="Average latency per hour, split into source delay, queue time and DotDigital time">']  # fmt: skip
    parts += _axis(top, "{:.0f} s" if top < 600 else "{:.0f} s")
    for i, bar in enumerate(bars):
        x = LEFT + i * slot + slot * 0.15
        y = HEIGHT - BOTTOM
        tip = escape(
            f"{bar.hour:%H:00}: {bar.count} delivered, source {fmt_seconds(bar.source)}, "
            f"queue {fmt_seconds(bar.queue)}, DotDigital {fmt_seconds(bar.dotdigital)}"
        )
        parts.append(f"<g><title>{tip}</title>")
        for attr, colour, _ in SERIES:
            h = plot_h * getattr(bar, attr) / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{colour}"/>'
            )
        parts.append("</g>")
        if i % max(len(bars) // 6, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" class="tick">{bar.hour:%H:00}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{name}</span>' for _, colour, name in SERIES
    )
    return mark_safe("".join(parts) + f'<p class="legend">{legend}</p>')  # noqa: S308 (numbers and escaped text only)


def backlog_chart(points: Sequence[FlowSample]) -> SafeString:
    """Backlog (events waiting) per minute sample, as a line."""
    if len(points) < 2:
        return mark_safe('<p class="empty">Not enough samples yet (one a minute).</p>')
    top = max(p.backlog for p in points) or 1
    first, last = points[0].at, points[-1].at
    span = (last - first).total_seconds() or 1.0
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    coords = " ".join(
        f"{LEFT + plot_w * (p.at - first).total_seconds() / span:.1f},"
        f"{HEIGHT - BOTTOM - plot_h * p.backlog / top:.1f}"
        for p in points
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Backlog over time">'
    ]
    parts += _axis(float(top), "{:.0f}")
    parts.append(f'<polyline points="{coords}" fill="none" stroke="#a66300" stroke-width="2"/>')
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 6}" class="tick">{first:%H:%M}</text>')
    parts.append(
        f'<text x="{WIDTH}" y="{HEIGHT - 6}" class="tick" text-anchor="end">{last:%H:%M}</text>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308
