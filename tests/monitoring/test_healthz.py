from __future__ import annotations

import pytest

from tests.conftest import REDIS_URL, redis_answers


def test_healthz_answers_without_login_when_all_is_well(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert set(body["workers"]) == {"realtime", "bulk", "webhooks"}


def test_healthz_is_503_when_the_broker_is_unreachable(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["broker"] == {"ok": False, "transport": "redis", "error": body["broker"]["error"]}
    assert body["database"]["ok"]


def test_healthz_is_503_when_the_filesystem_queue_folder_is_gone(client, db, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "missing")}
    assert client.get("/healthz").status_code == 503


@pytest.mark.skipif(not redis_answers, reason="Redis does not answer on 127.0.0.1:6379")
def test_healthz_reaches_a_real_redis(client, db, settings):
    settings.CELERY_BROKER_URL = REDIS_URL
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["broker"] == {"ok": True, "transport": "redis"}


def test_healthz_reports_when_each_lane_was_last_served(client, db):
    from monitoring.tasks import record_heartbeat

    record_heartbeat("realtime")
    workers = client.get("/healthz").json()["workers"]
    assert workers["realtime"]["recent"] is True
    assert workers["bulk"] == {"last_seen_seconds": None, "recent": False}
