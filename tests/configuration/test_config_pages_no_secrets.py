"""Part 1's render-everything check, over the engine's configuration pages: with every kind's
secrets set (and an alert webhook URL, which carries a token), no page shows any of them."""

from __future__ import annotations

import pytest
from django.test import Client

from exceptions_inbox.models import RoutingRule
from monitoring.models import DirectEnrolment, FieldMapping, Flow, FlowWatch, Schedule, SkuAlias
from monitoring.pipeline.flows import install_defaults, mirror_schedule
from tests.configuration.test_no_secrets import connections_with_every_secret_set

HOOK = "https://hooks.example.com/services/T0/B0/Hook-SECRET-v4lue"


@pytest.mark.parametrize("persona", ["admin", "member"])
def test_no_engine_configuration_page_renders_a_secret(client: Client, world, persona):
    connections, secrets = connections_with_every_secret_set(world)
    dd = next(c for c in connections if c.kind == "dotdigital")
    dd.options = {**dd.options, "api_endpoint": "http://127.0.0.1:9"}  # unreachable: fails at once
    dd.save()
    source = next(c for c in connections if c.kind != "dotdigital")
    flow = Flow.objects.create(workspace=world.workspace, name="F", source=source, destination=dd)
    install_defaults(flow)
    watch = FlowWatch.for_flow(flow)
    watch.webhook_url = HOOK
    watch.save()
    secrets.append(HOOK)
    mapping = FieldMapping.objects.filter(flow=flow).first()
    assert mapping is not None
    schedule = Schedule.objects.create(
        workspace=world.workspace,
        flow=flow,
        name="poll",
        task="monitoring.poll_flow",
        args=[flow.pk],
        every_seconds=60,
    )
    mirror_schedule(schedule)
    SkuAlias.objects.create(workspace=world.workspace, alias_key="a", sku="A")
    RoutingRule.objects.create(
        workspace=world.workspace, kind="sku_mapping_gap", team=world.workspace.teams.first()
    )
    DirectEnrolment.objects.create(
        workspace=world.workspace, destination=dd, program_id=3, event_type="order.created"
    )
    base = f"/w/{world.workspace.slug}/config"
    pages = [
        f"{base}/",
        f"{base}/flows/",
        f"{base}/flows/new/",
        f"{base}/flows/{flow.pk}/",
        f"{base}/flows/{flow.pk}/mappings/",
        f"{base}/flows/{flow.pk}/mappings/{mapping.pk}/",
        f"{base}/flows/{flow.pk}/dry-run/",
        f"{base}/sku-aliases/",
        f"{base}/sku-aliases/export/",
        f"{base}/schedules/",
        f"{base}/schedules/{schedule.pk}/",
        f"{base}/routing/",
        f"{base}/runbook/",
        f"{base}/lists/",
        f"{base}/audit/",
    ]
    client.force_login(getattr(world, persona))
    rendered = 0
    for page in pages:
        r = client.get(page)
        assert r.status_code in (200, 403), page
        html = r.content.decode()
        for secret in secrets:
            assert secret not in html, f"{page} shows {secret}"
        rendered += r.status_code == 200
    assert rendered >= 14
