"""SKU cleaning rules per flow, set on the aliases page: applied by staging before aliases and the
catalogue check, so a rule avoids a sku_mapping_gap, and saving one releases the events it
blocked."""

from __future__ import annotations

import pytest

from accounts.models import ConfigChange
from exceptions_inbox.models import Occurrence
from monitoring.models import SkuAlias, SourceEvent
from monitoring.pipeline.flows import mark_catalogue_loaded
from monitoring.pipeline.transforms import TransformError, clean_sku_by_rules, parse_sku_rules
from tests.monitoring.engine import Source, stage

State = SourceEvent.State
RULES = "strip_prefix:UK-\nreplace:_=-"


@pytest.fixture
def shop(world):
    source = Source(world.workspace, "shop", masters_products=True)
    source.post([source.product("AB-12")])
    stage()
    mark_catalogue_loaded(source.flow)
    return source


def line(sku: str) -> dict:
    return {"sku": sku, "quantity": 1, "line_total": {"amount": "30.00", "currency": "GBP"}}


def test_the_rules_apply_in_order_after_trimming():
    assert clean_sku_by_rules("UK-ab_12", RULES) == "ab-12"
    assert clean_sku_by_rules("ab_12-X", "strip_suffix:-X\nupper\nreplace:_=") == "AB12"
    assert clean_sku_by_rules("..AB-12.", "trim:.") == "AB-12"
    assert clean_sku_by_rules("AB 12", "replace: =-") == "AB-12"
    with pytest.raises(TransformError, match="Line 2"):
        parse_sku_rules("lower\nswap:a=b")


def test_a_cleaning_rule_avoids_a_sku_mapping_gap(admin_client, world, shop):
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/cleaning/",
        {"flow": shop.flow.pk, "rules": RULES},
    )
    assert r.status_code == 302
    shop.post(shop.order("SO-1", lines=[line("UK-ab_12")]))
    shop.post(shop.order("SO-2", lines=[line("UK-zz_99")]))
    stage()
    assert SourceEvent.objects.get(entity_key__endswith="SO-1").state == State.READY
    gap = SourceEvent.objects.get(entity_key__endswith="SO-2")
    assert gap.failed_kind == "sku_mapping_gap"
    # the gap names the SKU as cleaned, which is what an alias must then say
    assert Occurrence.objects.get(group__kind="sku_mapping_gap").sku == "zz-99"


def test_saving_a_rule_releases_the_events_it_blocked_and_is_audited(admin_client, world, shop):
    shop.post(shop.order("SO-1", lines=[line("UK-ab_12")]))
    stage()
    blocked = SourceEvent.objects.get(entity_key__endswith="SO-1")
    assert blocked.failed_kind == "sku_mapping_gap"

    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/cleaning/",
        {"flow": shop.flow.pk, "rules": RULES},
    )
    assert r.status_code == 302
    stage()
    blocked.refresh_from_db()
    assert blocked.state == State.READY
    assert Occurrence.objects.get().state == Occurrence.State.CLEARED
    change = ConfigChange.objects.get(object_type="monitoring.flow", note="SKU cleaning rules")
    assert change.changes == [{"field": "sku_cleaning", "before": "", "after": RULES}]


def test_a_flows_alias_is_stored_after_its_rules(admin_client, world, shop):
    shop.flow.sku_cleaning = RULES
    shop.flow.save()
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/",
        {"alias_key": "UK-old_12", "sku": "AB-12", "flow": shop.flow.pk},
    )
    assert r.status_code == 302
    assert SkuAlias.objects.get().alias_key == "old-12"
    shop.post(shop.order("SO-3", lines=[line("UK-OLD_12")]))
    stage()
    assert SourceEvent.objects.get(entity_key__endswith="SO-3").state == State.READY


def test_a_rule_that_does_not_parse_is_refused_on_the_field(
    admin_client, member_client, world, shop
):
    url = f"/w/{world.workspace.slug}/config/sku-aliases/cleaning/"
    r = admin_client.post(url, {"flow": shop.flow.pk, "rules": "replace:_"})
    assert r.status_code == 400
    assert "Line 1: replace:<from>=<to>" in r.context["cleaning_form"].errors["rules"][0]
    assert 'id="id_cleaning_rules_error"' in r.content.decode()
    assert member_client.post(url, {"flow": shop.flow.pk, "rules": "upper"}).status_code == 403
    shop.flow.refresh_from_db()
    assert shop.flow.sku_cleaning == ""
