"""API keys: made on the keys page and shown once, kept as a digest, audited, revoked; the rate
limit per key; the error bodies; keyset pages that stay put while events arrive."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.models import ConfigChange
from api.models import ApiKey
from monitoring.models import SourceEvent
from tests.api.support import KeyClient, make_key
from tests.exceptions_inbox.factories import make_group
from tests.monitoring.watch_support import make_event, make_flow


@pytest.fixture
def admin_page(world) -> Client:
    client = Client()
    client.force_login(world.admin)
    return client


def test_an_admin_makes_a_key_that_is_shown_once_and_kept_as_a_digest(world, admin_page):
    url = reverse("api:keys", kwargs={"ws": world.workspace.slug})
    response = admin_page.post(url, {"name": "Zendesk", "team": "", "scope": "act"})
    assert response.status_code == 200
    key = re.search(r'<code id="new-key">(sdk_[\w-]+)</code>', response.content.decode())[1]
    row = ApiKey.objects.get()
    assert row.digest == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiKey.objects.values().get())
    assert key not in admin_page.get(url).content.decode()  # the page never shows it again
    change = ConfigChange.objects.get(object_type="api.apikey")
    assert (change.action, change.actor, change.object_label) == (
        "created",
        world.admin,
        str(row),
    )
    assert audit.object_url(change) == url  # the audit page links the row to the keys page
    flows = KeyClient(key).get(f"/api/v1/w/{world.workspace.slug}/flows")
    assert flows.status_code == 200


def test_a_revoked_key_gets_401_at_once_and_the_revocation_is_audited(world, admin_page):
    row, key = make_key(world.workspace)
    api = KeyClient(key)
    assert api.get(f"/api/v1/w/{world.workspace.slug}/alerts").status_code == 200
    revoke = reverse("api:key-revoke", kwargs={"ws": world.workspace.slug, "pk": row.pk})
    assert admin_page.post(revoke).status_code == 302
    answer = api.get(f"/api/v1/w/{world.workspace.slug}/alerts")
    assert answer.status_code == 401
    assert answer.json()["error"] == "revoked"
    assert answer["WWW-Authenticate"].startswith("Bearer")
    change = ConfigChange.objects.filter(object_type="api.apikey").first()
    assert (change.note, change.actor) == ("Revoked", world.admin)


def test_a_key_name_that_is_a_persons_username_is_refused(world, admin_page):
    url = reverse("api:keys", kwargs={"ws": world.workspace.slug})
    response = admin_page.post(url, {"name": "teammate", "team": "", "scope": "read"})
    assert response.status_code == 400
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer sdk_not-a-key", "Basic YWRtaW46c3luY2Rlc2stZGVtbw=="],
)
def test_no_key_or_a_wrong_one_gets_401_with_a_json_body(world, header):
    client = Client(HTTP_AUTHORIZATION=header) if header else Client()
    answer = client.get(f"/api/v1/w/{world.workspace.slug}/flows")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"


def test_a_key_over_its_rate_gets_429_with_retry_after(world, settings):
    settings.API_RATE_PER_MINUTE = 3
    _row, key = make_key(world.workspace)
    api = KeyClient(key)
    url = f"/api/v1/w/{world.workspace.slug}/flows"
    assert [api.get(url).status_code for _ in range(3)] == [200, 200, 200]
    answer = api.get(url)
    assert answer.status_code == 429
    assert answer.json()["error"] == "rate_limited"
    assert 1 <= int(answer["Retry-After"]) <= 60
    # The window is the key's own: another key of the workspace is not held back.
    assert KeyClient(make_key(world.workspace)[1]).get(url).status_code == 200


def test_event_pages_stay_put_while_events_arrive(world):
    flow = make_flow(world.workspace, destination=False)
    first = [make_event(flow) for _ in range(5)]
    api = KeyClient(make_key(world.workspace)[1])
    url = f"/api/v1/w/{world.workspace.slug}/events"
    page = api.get(url, {"limit": 2}).json()
    assert [e["id"] for e in page["items"]] == [first[4].pk, first[3].pk]
    make_event(flow)  # arrives between two pages
    seen = [e["id"] for e in page["items"]]
    while page["next_cursor"]:
        page = api.get(url, {"limit": 2, "cursor": page["next_cursor"]}).json()
        seen += [e["id"] for e in page["items"]]
    assert seen == [e.pk for e in reversed(first)]


def test_event_pages_follow_receipt_time_within_a_window_ties_broken_by_id(world):
    flow = make_flow(world.workspace, destination=False)
    day = timezone.now() - timedelta(days=3)
    # Three received in one batch (one timestamp), one received later though stored first (a
    # source's retry), one outside the window.
    later = make_event(flow, occurred=day + timedelta(hours=1))
    batch = [make_event(flow, occurred=day - timedelta(seconds=1)) for _ in range(3)]
    SourceEvent.objects.filter(pk__in=[e.pk for e in batch]).update(received_at=day)
    make_event(flow, occurred=day - timedelta(days=2))
    api = KeyClient(make_key(world.workspace)[1])
    url = f"/api/v1/w/{world.workspace.slug}/events"
    window = {
        "flow": flow.pk,
        "received_from": (day - timedelta(hours=1)).isoformat(),
        "received_to": (day + timedelta(hours=2)).isoformat(),
        "limit": 1,
    }
    page = api.get(url, window).json()
    seen = [e["id"] for e in page["items"]]
    while page["next_cursor"]:
        page = api.get(url, {**window, "cursor": page["next_cursor"]}).json()
        seen += [e["id"] for e in page["items"]]
    assert seen == [later.pk, *sorted((e.pk for e in batch), reverse=True)]


def test_event_filters_and_a_made_up_cursor(world):
    flow = make_flow(world.workspace, destination=False)
    failed = make_event(flow, state="failed")
    make_event(flow)
    api = KeyClient(make_key(world.workspace)[1])
    url = f"/api/v1/w/{world.workspace.slug}/events"
    items = api.get(url, {"state": "failed", "flow": flow.pk}).json()["items"]
    assert [e["id"] for e in items] == [failed.pk]
    assert api.get(url, {"cursor": "bm90LWEtY3Vyc29y"}).status_code == 400
    assert api.get(url, {"limit": 501}).status_code == 422
    assert api.get(url, {"email": "jo\x00@example.com"}).status_code == 422


def test_the_exceptions_list_follows_the_inbox_tabs_and_pages_by_cursor(world):
    groups = [make_group(world.workspace, sku=f"SKU-{n}") for n in range(3)]
    api = KeyClient(make_key(world.workspace)[1])
    url = f"/api/v1/w/{world.workspace.slug}/exceptions"
    page = api.get(url, {"tab": "team", "limit": 2}).json()
    rest = api.get(url, {"tab": "team", "limit": 2, "cursor": page["next_cursor"]}).json()
    ids = [g["id"] for g in page["items"] + rest["items"]]
    assert sorted(ids) == sorted(g.pk for g in groups) and rest["next_cursor"] is None
    assert api.get(url, {"tab": "resolved"}).json()["items"] == []


def test_the_openapi_document_and_its_docs_page_need_no_cdn(client):
    document = client.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "429" in document["paths"]["/api/v1/w/{ws}/flows"]["get"]["responses"]
    page = client.get("/api/v1/docs").content.decode()
    assert "cdn" not in page.lower() and "/static/ninja/swagger-ui-bundle.js" in page


def test_an_action_needs_no_body_and_the_refusal_says_why(world):
    group = make_group(world.workspace, sku="NOBODY-1")
    api = KeyClient(make_key(world.workspace)[1])
    url = f"/api/v1/w/{world.workspace.slug}/exceptions/{group.pk}/acknowledge"
    assert api.generic("POST", url).status_code == 200
    again = api.generic("POST", url)
    assert again.status_code == 409
    assert again.json()["detail"] == "Cannot acknowledge: it is acknowledged."


def test_a_changed_rate_setting_applies_to_keys_already_in_use(world, settings):
    settings.API_RATE_PER_MINUTE = 1
    api = KeyClient(make_key(world.workspace)[1])
    url = f"/api/v1/w/{world.workspace.slug}/flows"
    assert [api.get(url).status_code for _ in range(2)] == [200, 429]
    settings.API_RATE_PER_MINUTE = 5
    assert api.get(url).status_code == 200


def test_the_flow_list_gives_each_lanes_latency_over_the_hour(world):
    flow = make_flow(world.workspace, name="Mintsoft → DotDigital")
    for _ in range(3):
        make_event(flow, source_delay=0.01, queue=0.2, dotdigital=0.3, lane="realtime")
    make_event(flow, source_delay=0.01, queue=6, dotdigital=1.5, lane="bulk")
    _, key = make_key(world.workspace, scope="read")
    [out] = KeyClient(key).get(f"/api/v1/w/{world.workspace.slug}/flows").json()["items"]
    lanes = {lane["lane"]: lane for lane in out["latency_seconds"]["by_lane_1h"]}
    assert (lanes["realtime"]["delivered"], lanes["bulk"]["delivered"]) == (3, 1)
    assert lanes["realtime"]["p95"] <= 1 < 5 < lanes["bulk"]["p95"]
