from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User

from accounts.models import Workspace
from tests.factories import make_member, make_workspace


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """A test database per process, so concurrent runs never collide: on PostgreSQL a database of
    its own; on SQLite a file, as in production, not Django's default in-memory database. That one
    is shared between threads in SQLite's shared-cache mode, whose table locks fail at once
    ("database table is locked") instead of waiting out the busy timeout, so a worker thread's
    write would fail while a test's thread reads; a file in WAL mode lets readers and the writer
    go on together, as web, workers and beat do on the embedded default."""
    from django.conf import settings

    for db in settings.DATABASES.values():
        if db["ENGINE"].endswith("postgresql"):
            db.setdefault("TEST", {})["NAME"] = f"test_{db['NAME']}_{os.getpid()}"
        elif db["ENGINE"].endswith("sqlite3"):
            folder = tmp_path_factory.mktemp("sqlite")
            db.setdefault("TEST", {})["NAME"] = str(folder / f"test_{os.getpid()}.sqlite3")


@pytest.fixture(scope="session", autouse=True)
def _no_stray_sessions_at_teardown(django_db_setup, django_db_blocker):
    """On PostgreSQL, end any other session still on this process's test database before it is
    dropped: a worker process or thread a test started and that outlived it would otherwise make
    the DROP fail ("being accessed by other users") after every test has passed."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()


@pytest.fixture(autouse=True)
def _fresh_rate_limit_blocks():
    """Each test's DotDigital calls start with no 429 behind them in this process."""
    from connectors.dotdigital.transport import forget_rate_limit_blocks

    forget_rate_limit_blocks()


@pytest.fixture(autouse=True)
def _fast_tests(settings, tmp_path):
    # Test speed-ups, never production behaviour.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        # Each test gets its own broker folders, so no test sees another's messages.
        options: dict[str, Any] = {
            "data_folder_in": str(tmp_path / "broker" / "queue"),
            "data_folder_out": str(tmp_path / "broker" / "queue"),
            "control_folder": str(tmp_path / "broker" / "control"),
            "store_processed": False,
        }
        for key in ("data_folder_in", "control_folder"):
            (tmp_path / "broker" / options[key].rsplit("/", 1)[1]).mkdir(
                parents=True, exist_ok=True
            )
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = options


@dataclass
class World:
    """One retailer's workspace with each persona, and a second workspace for the outsider."""

    workspace: Workspace
    other: Workspace
    member: User  # in the workspace, in no team
    teammate: User  # in the workspace and in the ops team
    admin: User  # the workspace's admin
    outsider: User  # only in the other workspace


@pytest.fixture
def world(db) -> World:
    workspace = make_workspace("acme")
    other = make_workspace("other")
    return World(
        workspace=workspace,
        other=other,
        member=make_member(workspace, "member"),
        teammate=make_member(workspace, "teammate", teams=["ops"]),
        admin=make_member(workspace, "admin", role="admin", teams=["admins"]),
        outsider=make_member(other, "outsider"),
    )


def service_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
redis_answers = service_answers("127.0.0.1", 6379)
rabbitmq_answers = service_answers("127.0.0.1", 5672)

# The production brokers, for tests parametrized over them (skipped where one does not answer).
NETWORK_BROKERS = [
    pytest.param(
        REDIS_URL,
        marks=pytest.mark.skipif(not redis_answers, reason="Redis does not answer on 6379"),
        id="redis",
    ),
    pytest.param(
        RABBITMQ_URL,
        marks=pytest.mark.skipif(not rabbitmq_answers, reason="RabbitMQ does not answer on 5672"),
        id="rabbitmq",
    ),
]


@pytest.fixture(params=["db", "redis"])
def budget_backend(request):
    """Each store a rate budget can live in: the database, and Redis where it answers."""
    from connectors.budget import DatabaseBackend, RedisBackend

    if request.param == "redis":
        if not redis_answers:
            pytest.skip("Redis does not answer on 127.0.0.1:6379")
        backend = RedisBackend(REDIS_URL, prefix=f"test:{uuid.uuid4()}")
        yield backend
        for key in backend.client.scan_iter(f"{backend.prefix}:*"):
            backend.client.delete(key)
        return
    request.getfixturevalue("db")
    yield DatabaseBackend()
