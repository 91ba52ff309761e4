"""Strict readers of the environment for settings.py.

Each helper returns a typed value or raises ImproperlyConfigured naming the variable, so a typo in
a deployment fails at start-up rather than at the first request. ``NAME_FILE`` is honoured for
secrets (Docker and systemd credentials), and wins over ``NAME``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(f"{name} must be a comma-separated list without empty items")
    return items


def env_secret(name: str) -> str | None:
    """The secret in ``NAME_FILE`` (a path) or ``NAME``, or None when neither is set."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc}") from None
        if not value:
            raise ImproperlyConfigured(f"{name}_FILE: {path} is empty")
        return value
    raw = os.environ.get(name)
    if raw is not None and not raw.strip():
        raise ImproperlyConfigured(f"{name} is set but empty")
    return raw


def local_secret(path: Path, make: Any = None) -> str:
    """Read a secret kept in a local file, creating it (mode 0600) on first use.

    Used only when the environment sets none, so that the embedded default (``make demo``)
    needs no configuration; production sets the variable instead (README).
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make() if make else secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def env_database(name: str, default: str) -> dict[str, Any]:
    raw = os.environ.get(name) or default
    if not raw.startswith(("sqlite://", "postgres://", "postgresql://")):
        raise ImproperlyConfigured(
            f"{name} must be a sqlite:// or postgres:// URL, not {raw.split('://')[0]!r}"
        )
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(raw))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Web, workers and beat share the file: wait for locks rather than fail, take the write
        # lock at BEGIN (no upgrade deadlocks), and let readers run beside the writer (WAL).
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    else:
        # Django's backend with psycopg's compiled timestamptz loader (config/postgresql/base.py).
        config["ENGINE"] = "config.postgresql"
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
        config["CONN_HEALTH_CHECKS"] = True
    return config


def env_broker_url(name: str, default: str) -> str:
    raw = os.environ.get(name) or default
    scheme = raw.split("://", 1)[0]
    if "://" not in raw or scheme not in {
        "filesystem",
        "redis",
        "rediss",
        "amqp",
        "amqps",
        "pyamqp",
    }:
        raise ImproperlyConfigured(
            f"{name} must be a filesystem://, redis:// or amqp:// URL, not {raw!r}"
        )
    return raw
