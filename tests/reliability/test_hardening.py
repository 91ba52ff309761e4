"""Hardening: no credential in any log line; acks_late only on idempotent tasks."""

from __future__ import annotations

import logging

import pytest

from config.celery import app
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import DotDigitalError
from tests.factories import make_connection
from tests.monitoring.engine import Source

PASSWORD = "pw-SECRET-d0tdigital-9f2"
API_USER = "apiuser-secret-7c1@apiconnector.com"


def test_no_token_or_password_reaches_a_log_line(world, caplog):
    caplog.set_level(logging.DEBUG)
    shop = Source(world.workspace, "shop")
    # A burst of webhooks, good and bad (Django logs every 4xx with its path).
    for n in range(20):
        shop.post(shop.order(str(n)))
        shop.post(b"{not json", content_type="application/json")
        shop.post(b"x" * 10, content_type="text/plain")
    # A failing DotDigital call and a connection test against an address that does not answer.
    dd = make_connection(
        world.workspace,
        "dotdigital",
        credentials={"api_user": API_USER, "password": PASSWORD},
        options={"api_endpoint": "http://127.0.0.1:9", "discovery_url": "http://127.0.0.1:9"},
    )
    with pytest.raises(DotDigitalError):
        DotDigitalClient.for_connection(dd, max_wait=0.0).get_contact("email", "jo@example.com")
    from connectors.views import check_connection  # what "Test connection" runs

    assert not check_connection(dd).ok
    text = "\n".join([r.getMessage() for r in caplog.records] + [caplog.text])
    assert "Bad Request: /hooks/<token>/" in text  # the burst was logged...
    for secret in (shop.token, PASSWORD):  # ...without its credentials
        assert secret not in text


# Tasks that may be redelivered after a worker dies mid-run (acks_late) must be idempotent: their
# work is rows claimed with leases, so running one twice does the work once. Every other task is
# acknowledged on receipt. A new task must be added to one list or the other, on purpose.
IDEMPOTENT_ACKS_LATE: set[str] = set()


def test_acks_late_is_only_on_tasks_known_to_be_idempotent():
    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    late = {name for name, task in ours.items() if getattr(task, "acks_late", False)}
    assert late <= IDEMPOTENT_ACKS_LATE, f"acks_late on tasks not proven idempotent: {sorted(late - IDEMPOTENT_ACKS_LATE)}"  # fmt: skip
    assert app.conf.task_acks_late is False
    assert "monitoring.sweep_retention" in ours
