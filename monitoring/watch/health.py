"""Reachability of what Syncdesk needs, for /healthz and load balancers."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone
from kombu import Connection as BrokerConnection

from connectors.models import RateWindow
from exceptions_inbox.models import ExceptionGroup
from monitoring.models import DeliveryBatch, Flow, Operation, SourceEvent, WorkerHeartbeat
from monitoring.watch.flow_health import BUCKETS, HOUR, IN_FLIGHT, histogram_aggregates, latency


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    url = settings.CELERY_BROKER_URL
    scheme = url.split("://", 1)[0]
    if scheme == "filesystem":
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])  # type: ignore[arg-type]
        ok = folder.is_dir() and _writable(folder)
        return {"ok": ok, "transport": scheme, **({} if ok else {"error": "queue folder missing"})}
    try:
        with BrokerConnection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # refused, timed out, auth failed: all "down"
        return {"ok": False, "transport": scheme, "error": type(exc).__name__}
    return {"ok": True, "transport": scheme}


def _writable(folder: Path) -> bool:
    probe = folder / ".healthz"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError:
        return False
    return True


def worker_lanes() -> dict[str, Any]:
    """When a worker last served each lane (informative: a lane nobody serves backs up)."""
    now = timezone.now()
    seen = {hb.queue: hb.seen_at for hb in WorkerHeartbeat.objects.all()}
    return {
        queue: {
            "last_seen_seconds": int((now - seen[queue]).total_seconds())
            if queue in seen
            else None,
            "recent": queue in seen and now - seen[queue] < timedelta(minutes=5),
        }
        for queue in ("realtime", "bulk", "webhooks")
    }


def healthz() -> tuple[bool, dict[str, Any]]:
    db = check_database()
    broker = check_broker()
    body: dict[str, Any] = {"database": db, "broker": broker}
    if db["ok"]:
        body["workers"] = worker_lanes()
    ok = bool(db["ok"] and broker["ok"])
    body["status"] = "ok" if ok else "fail"
    return ok, body


# -- /metrics ---------------------------------------------------------------------------------


def _labels(**labels: object) -> str:
    def esc(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _rows(qs: Any) -> list[dict[str, Any]]:
    """Rows of a `.values()` query as plain dicts (each query has its own keys)."""
    return [dict(row) for row in qs]


class _Exposition:
    """The lines of a Prometheus text exposition being written, with each flow's labels."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.flows = {f.pk: f for f in Flow.objects.select_related("workspace")}

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def flow_labels(self, flow_id: int | None) -> dict[str, object]:
        flow = self.flows.get(flow_id) if flow_id else None
        if flow is None:
            return {"workspace": "", "flow": "none"}
        return {"workspace": flow.workspace.slug, "flow": flow.name}


def metrics_text(now: Any = None) -> str:
    """Prometheus text exposition, computed from the database (every worker on every machine
    counts): events by state, latency histograms per flow and lane (deliveries of the last hour),
    backlog and its oldest age, DotDigital writes and imports, rate-limit windows, and open
    exceptions by kind and team. A bounded number of grouped queries."""
    now = now or timezone.now()
    out = _Exposition()
    _event_metrics(out)
    _latency_metrics(out, now)
    _backlog_metrics(out, now)
    _dotdigital_metrics(out)
    _rate_window_metrics(out, now)
    _exception_metrics(out)
    return "\n".join(out.lines) + "\n"


def _event_metrics(out: _Exposition) -> None:
    out.family("syncdesk_events", "gauge", "Events stored, by flow and state.")
    for row in _rows(
        SourceEvent.objects.values("flow_id", "state").annotate(n=Count("pk")).order_by()
    ):
        labels = _labels(**out.flow_labels(row["flow_id"]), state=row["state"])
        out.lines.append(f"syncdesk_events{labels} {row['n']}")


def _latency_metrics(out: _Exposition, now: datetime) -> None:
    out.family(
        "syncdesk_event_latency_seconds",
        "histogram",
        "End-to-end latency (delivered - occurred) of the events delivered in the last hour,"
        " backfill apart.",
    )
    rows = (
        SourceEvent.objects.filter(
            state=SourceEvent.State.DELIVERED, delivered_at__gte=now - HOUR, is_backfill=False
        )
        .annotate(lat=latency())
        .values("flow_id", "lane")
        .annotate(**histogram_aggregates(""), total=Sum("lat"))
        .order_by()
    )
    lines = out.lines
    for row in _rows(rows):
        base = {**out.flow_labels(row["flow_id"]), "lane": row["lane"]}
        for i, bound in enumerate(BUCKETS):
            le = f"{bound:g}"
            lines.append(
                f"syncdesk_event_latency_seconds_bucket{_labels(**base, le=le)} {row[f'le{i}']}"
            )
        lines.append(
            f"syncdesk_event_latency_seconds_bucket{_labels(**base, le='+Inf')} {row['n']}"
        )
        total = row["total"]
        seconds = (
            total.total_seconds()
            if hasattr(total, "total_seconds")
            else (float(total) / 1_000_000 if total else 0.0)
        )
        lines.append(f"syncdesk_event_latency_seconds_sum{_labels(**base)} {seconds:.3f}")
        lines.append(f"syncdesk_event_latency_seconds_count{_labels(**base)} {row['n']}")


def _backlog_metrics(out: _Exposition, now: datetime) -> None:
    """The live backlog and its oldest age (what lag alerts watch), and the backfill waiting
    apart: loaded history queued in the bulk lane is not the flow falling behind."""
    out.family(
        "syncdesk_backlog",
        "gauge",
        "Events received or staged and not yet delivered, backfill apart.",
    )
    family_age, family_backfill = [], []
    live = Q(is_backfill=False)
    for row in _rows(
        SourceEvent.objects.filter(state__in=IN_FLIGHT)
        .values("flow_id")
        .annotate(
            n=Count("pk", filter=live),
            oldest=Min("received_at", filter=live),
            backfill=Count("pk", filter=Q(is_backfill=True)),
        )
        .order_by()
    ):
        labels = _labels(**out.flow_labels(row["flow_id"]))
        out.lines.append(f"syncdesk_backlog{labels} {row['n']}")
        age = (now - row["oldest"]).total_seconds() if row["oldest"] else 0
        family_age.append(f"syncdesk_backlog_oldest_age_seconds{labels} {age:.0f}")
        family_backfill.append(f"syncdesk_backfill_backlog{labels} {row['backfill']}")
    out.family("syncdesk_backlog_oldest_age_seconds", "gauge", "Age of the oldest waiting event.")
    out.lines.extend(family_age)
    out.family(
        "syncdesk_backfill_backlog",
        "gauge",
        "Backfill events received or staged and not yet delivered (not in the backlog).",
    )
    out.lines.extend(family_backfill)


def _dotdigital_metrics(out: _Exposition) -> None:
    out.family(
        "syncdesk_dotdigital_writes", "gauge", "Outbox operations by kind, way sent and state."
    )
    for row in _rows(
        Operation.objects.values("kind", "via", "state").annotate(n=Count("pk")).order_by()
    ):
        labels = _labels(kind=row["kind"], via=row["via"] or "none", state=row["state"])
        out.lines.append(f"syncdesk_dotdigital_writes{labels} {row['n']}")
    out.family("syncdesk_dotdigital_write_attempts", "gauge", "Calls made for outbox operations.")
    for row in _rows(Operation.objects.values("kind").annotate(n=Sum("attempts")).order_by()):
        out.lines.append(
            f"syncdesk_dotdigital_write_attempts{_labels(kind=row['kind'])} {row['n'] or 0}"
        )
    out.family("syncdesk_dotdigital_imports", "gauge", "DotDigital imports by kind and state.")
    for row in _rows(
        DeliveryBatch.objects.values("kind", "state")
        .annotate(n=Count("pk"), polls=Sum("polls"))
        .order_by()
    ):
        labels = _labels(kind=row["kind"], state=row["state"])
        out.lines.append(f"syncdesk_dotdigital_imports{labels} {row['n']}")


def _rate_window_metrics(out: _Exposition, now: datetime) -> None:
    windows = list(RateWindow.objects.all())
    out.family("syncdesk_rate_window_used", "gauge", "Calls used in the current rate window.")
    for w in windows:
        labels = _labels(account=w.account_key, tier=w.tier)
        out.lines.append(f"syncdesk_rate_window_used{labels} {w.used}")
    out.family("syncdesk_rate_window_limit", "gauge", "Calls allowed per rate window.")
    for w in windows:
        labels = _labels(account=w.account_key, tier=w.tier)
        out.lines.append(f"syncdesk_rate_window_limit{labels} {w.limit}")
    out.family(
        "syncdesk_rate_limit_wait_seconds",
        "gauge",
        "Seconds until a tier blocked by a 429 may be called again (0: not blocked).",
    )
    epoch = now.timestamp()
    for w in windows:
        wait = max(w.blocked_until - epoch, 0.0)
        labels = _labels(account=w.account_key, tier=w.tier)
        out.lines.append(f"syncdesk_rate_limit_wait_seconds{labels} {wait:.1f}")


def _exception_metrics(out: _Exposition) -> None:
    out.family(
        "syncdesk_open_exceptions", "gauge", "Open exception groups by workspace, kind and team."
    )
    open_states = ("open", "acknowledged", "snoozed")
    for row in _rows(
        ExceptionGroup.objects.filter(state__in=open_states)
        .values("workspace__slug", "kind", "team__slug")
        .annotate(n=Count("pk"), blocked=Sum("open_count", filter=Q(open_count__gt=0)))
        .order_by()
    ):
        labels = _labels(
            workspace=row["workspace__slug"], kind=row["kind"], team=row["team__slug"] or ""
        )
        out.lines.append(f"syncdesk_open_exceptions{labels} {row['n']}")
