"""Reachability of what Syncdesk needs, for /healthz and load balancers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from kombu import Connection as BrokerConnection

from monitoring.models import WorkerHeartbeat


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
        for queue in ("realtime", "bulk")
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
