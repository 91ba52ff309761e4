"""A fix's suggestions: each with the product's name, its stock and how close it is, best first;
only one close enough is applied in one click."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from exceptions_inbox.kinds import Suggestion
from exceptions_inbox.models import ExceptionGroup
from monitoring.pipeline.flows import mark_catalogue_loaded
from tests.exceptions_inbox.engine_support import order
from tests.exceptions_inbox.factories import make_group
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, Engine, event


def group_url(group):
    return reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk})


def one_click_values(html: str) -> list[str]:
    return re.findall(r'<button type="submit" name="catalogue_sku" value="([^"]+)"', html)


def test_suggestions_show_name_stock_and_closeness_and_only_close_ones_are_one_click(
    client, world, hooks
):
    hooks.register(
        "sku_mapping_gap",
        fix=hooks.recorder("fix"),
        suggest=lambda group: [
            Suggestion("TEE-058/RED-M", 100, name="Tee Red M", stock=12, why="product key"),
            Suggestion("LEG-1085", 62, name="Legging Black S", stock=0),
        ],
    )
    group = make_group(world.workspace, sku="LEG-1058")
    client.force_login(world.teammate)

    html = client.get(group_url(group)).content.decode()

    assert one_click_values(html) == ["TEE-058/RED-M"]
    assert html.index("TEE-058/RED-M") < html.index("LEG-1085")
    assert "Tee Red M" in html and "12 in stock" in html and "100% close" in html
    assert "Legging Black S" in html and "0 in stock" in html and "62% close" in html


def test_the_one_click_closeness_is_a_setting(client, world, hooks, settings):
    settings.INBOX_ONE_CLICK_CLOSENESS = 60
    hooks.register(
        "sku_mapping_gap",
        fix=hooks.recorder("fix"),
        suggest=lambda group: [Suggestion("LEG-1085", 62), Suggestion("LEG-2000", 55)],
    )
    group = make_group(world.workspace, sku="LEG-1058")
    client.force_login(world.teammate)

    assert one_click_values(client.get(group_url(group)).content.decode()) == ["LEG-1085"]


def test_plain_catalogue_skus_are_ranked_by_spelling_with_their_closeness(client, world, hooks):
    hooks.register(
        "sku_mapping_gap",
        fix=hooks.recorder("fix"),
        suggest=lambda group: ["KETTLE-2L", "AB-12-BLUE", "AB-12-RED"],
    )
    group = make_group(world.workspace, sku="AB-12/RED")
    client.force_login(world.teammate)

    suggested = client.get(group_url(group)).context["suggestions"]

    assert suggested[0][0].value == "AB-12-RED" and suggested[0][1] is True
    assert [s.closeness for s, _ in suggested] == sorted(
        (s.closeness for s, _ in suggested), reverse=True
    )
    assert "KETTLE-2L" not in [s.value for s, _ in suggested]


# ------------------------------------------------------------------------ through the engine


def named_product(sku: str, name: str, key: str) -> dict[str, Any]:
    return event(
        ERP,
        "product.updated",
        f"product:{sku}",
        f"product:{sku}:v1",
        {"sku": sku, "product_key": key, "name": name, "status": "active"},
    )


def stock(sku: str, saleable: int) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    return event(
        ("demo-wms", "wh-1"),
        "stock.changed",
        f"stock:{sku}:main",
        f"stock:{sku}:1",
        {
            "sku": sku,
            "location": {"key": "main", "name": "Main warehouse"},
            "quantities": {"on_hand": saleable, "allocated": 0, "saleable": saleable},
            "as_of": now.isoformat().replace("+00:00", "Z"),
            "mode": "snapshot",
        },
    )


@pytest.mark.django_db(transaction=True)
def test_a_legacy_sku_gets_the_product_its_lines_name_first_with_name_and_stock(
    engine: Engine, hooks: Any
):
    """LEG-1058 stood for the 58th product, but spelling put another first: the blocked lines
    carry the product's key and name, which rank it first, one click away."""
    hooks.restore()  # the engine's own hooks
    engine.post(
        "erp",
        [
            named_product("LEG-1085/BLK-S", "Legging Black S", "P0085"),
            named_product("TEE-058/RED-M", "Tee Red M", "P0058"),
            named_product("MUG-001/WHT", "Mug White", "P0001"),
        ],
    )
    engine.post("wms", [stock("TEE-058/RED-M", 12), stock("LEG-1085/BLK-S", 3)])
    engine.pump()
    mark_catalogue_loaded(engine.erp_flow)
    placed = order("NW1", "jo@example.com", at=datetime.now(UTC) - timedelta(minutes=5))
    placed["data"]["lines"][0].update(
        {"sku": "LEG-1058", "sku_raw": "LEG-1058", "product_key": "P0058", "name": "Tee Red M"}
    )
    engine.post("erp", [placed])
    engine.pump()
    group = ExceptionGroup.objects.get(kind="sku_mapping_gap")
    web = Client()
    web.force_login(make_member(engine.workspace, "ops-person", teams=["ops"]))

    page = web.get(group_url(group))

    suggested = [s for s, _one_click in page.context["suggestions"]]
    assert suggested[0].value == "TEE-058/RED-M"
    assert (suggested[0].closeness, suggested[0].name, suggested[0].stock) == (100, "Tee Red M", 12)
    html = page.content.decode()
    assert one_click_values(html)[0] == "TEE-058/RED-M"
    assert "Tee Red M" in html and "12 in stock" in html and "100% close" in html
    others = {s.value: s for s in suggested[1:]}
    assert all(s.closeness < 100 for s in others.values())
    assert "LEG-1085/BLK-S" not in one_click_values(html)


@pytest.mark.django_db(transaction=True)
def test_another_size_of_the_product_is_shown_but_never_one_click(engine: Engine, hooks: Any):
    """Without a product key, the line's name picks the product; a product one word (a size)
    apart, or a SKU one character apart, is well short of one click."""
    hooks.restore()
    engine.post(
        "erp",
        [
            named_product("TEE-058/RED-M", "Tee Red M", "P0058"),
            named_product("TEE-059/RED-S", "Tee Red S", "P0059"),
            named_product("TEE-58/RED-M", "Tee Red M Kids", "P0158"),
        ],
    )
    engine.pump()
    mark_catalogue_loaded(engine.erp_flow)
    placed = order("NW2", "jo@example.com", at=datetime.now(UTC) - timedelta(minutes=5))
    placed["data"]["lines"][0].update({"sku": "TEE-058-RED-M", "name": "Tee Red M"})
    placed["data"]["lines"][0]["sku_raw"] = "TEE-058-RED-M"
    engine.post("erp", [placed])
    engine.pump()
    group = ExceptionGroup.objects.get(kind="sku_mapping_gap")
    web = Client()
    web.force_login(make_member(engine.workspace, "ops-person", teams=["ops"]))

    page = web.get(group_url(group))

    closeness = {s.value: s.closeness for s, _one_click in page.context["suggestions"]}
    assert closeness["TEE-058/RED-M"] == 100  # the same characters, and the same name
    assert closeness["TEE-059/RED-S"] < 90 and closeness["TEE-58/RED-M"] < 90
    assert one_click_values(page.content.decode()) == ["TEE-058/RED-M"]
