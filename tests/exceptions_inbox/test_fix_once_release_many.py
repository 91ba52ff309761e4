"""Fix once, release many, end to end: 40 orders posted to the public webhook are blocked by one
unknown SKU; a person of the owning team adds one alias from the inbox's group page; all 40 then
reach the DotDigital sandbox, the group resolves itself and the audit accounts for every event.

This runs the real engine (its hooks as registered when the app was ready, staging, delivery and
confirmation) against the sandbox process: nothing stands in for either side.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from exceptions_inbox.kinds import get_kind
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence
from monitoring.models import SkuAlias, SourceEvent
from tests.exceptions_inbox.engine_support import (
    CATALOGUE,
    UNKNOWN,
    load_catalogue,
    orders_in_sandbox,
    post_orders,
)
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = 40


@pytest.fixture
def hooks() -> Iterator[None]:
    """The engine's own hooks, not the package's stand-ins (this overrides the autouse fixture
    of tests/exceptions_inbox/conftest.py that clears them)."""
    yield


def test_one_alias_added_in_the_inbox_releases_40_blocked_orders_to_dotdigital(
    engine: Engine, capsys: pytest.CaptureFixture[str]
):
    ops = make_member(engine.workspace, "ops-person", teams=["ops"])
    finance = make_member(engine.workspace, "finance-person", teams=["finance"])
    load_catalogue(engine)
    numbers = post_orders(engine, ORDERS)

    # One cause, one group of 40 blocked events, owned by ops; nothing of them in DotDigital.
    blocked = SourceEvent.objects.filter(event_type="order.created")
    assert blocked.count() == ORDERS
    assert set(blocked.values_list("state", "failed_kind")) == {
        (SourceEvent.State.FAILED, "sku_mapping_gap")
    }
    group = ExceptionGroup.objects.get()
    assert (group.kind, group.team.slug) == ("sku_mapping_gap", "ops")
    assert set(group.occurrences.values_list("sku", flat=True)) == {UNKNOWN}
    assert (group.state, group.occurrence_count, group.open_count) == ("open", ORDERS, ORDERS)
    assert orders_in_sandbox(engine) == {}
    assert get_kind("sku_mapping_gap").fix is not None  # the engine registered its fix

    kwargs = {"ws": engine.workspace.slug, "pk": group.pk}
    group_url = reverse("exceptions_inbox:group", kwargs=kwargs)
    fix_url = reverse("exceptions_inbox:group-fix", kwargs=kwargs)
    # Another team sees the group but is neither offered the fix nor allowed it.
    outside = Client()
    outside.force_login(finance)
    page = outside.get(group_url)
    assert page.status_code == 200 and f'action="{fix_url}"' not in page.content.decode()
    assert outside.post(fix_url, {"catalogue_sku": "AB-12-RED"}).status_code == 403
    assert not SkuAlias.objects.exists()

    # The owning team's person opens the group and adds the alias: one action.
    web = Client()
    web.force_login(ops)
    page = web.get(group_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert f'action="{fix_url}"' in html
    # The blocked events' payloads, as the source posted them.
    assert "&quot;source_event_id&quot;: &quot;demo-erp:order:NW1039:created&quot;" in html
    # The nearest catalogue SKUs are offered, best first; one click on the first adds the alias.
    suggested = [s.value for s, _one_click in page.context["suggestions"]]
    assert suggested[0] == "AB-12-RED"
    assert "KETTLE-2L" not in suggested
    assert 'name="catalogue_sku" value="AB-12-RED"' in html
    response = web.post(fix_url, {"catalogue_sku": "AB-12-RED"}, follow=True)
    assert response.status_code == 200
    assert "now means AB-12-RED; its 40 event(s) are being retried" in response.content.decode()
    alias = SkuAlias.objects.get()
    assert alias.sku == "AB-12-RED"

    engine.pump()

    # All 40 got through to the sandbox, each as its order record with the SKU the ERP sent.
    delivered = orders_in_sandbox(engine)
    assert sorted(doc["OrderNumber"] for doc in delivered.values()) == numbers
    assert {p["Sku"] for doc in delivered.values() for p in doc["Products"]} == {UNKNOWN}
    assert set(blocked.values_list("state", flat=True)) == {SourceEvent.State.DELIVERED}

    # The group resolved itself (by Syncdesk, after the person's fix), every occurrence cleared.
    group.refresh_from_db()
    assert (group.state, group.open_count) == ("resolved", 0)
    assert set(Occurrence.objects.values_list("state", flat=True)) == {"cleared"}
    history = list(group.activities.values_list("kind", "actor"))
    assert history[-2:] == [(Activity.Kind.FIXED, ops.pk), (Activity.Kind.AUTO_RESOLVED, None)]

    # And the audit accounts for every event, with nothing left in progress.
    call_command("syncdesk_audit", "--expect-delivery", "--settle", "1")
    out = capsys.readouterr().out
    total = SourceEvent.objects.count()
    assert total == len(CATALOGUE) + ORDERS
    assert f"All {total} events accounted for." in out
