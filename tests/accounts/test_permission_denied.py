"""A refusal (403) is a page of the site, in its shell, saying who can do what was refused: the
owning team's people and the workspace's admins, to the workspace's members only."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import make_member
from tests.monitoring.watch_support import make_flow

pytestmark = pytest.mark.django_db


def client_of(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_member_refused_configuration_sees_the_shell_and_the_admins(world):
    flow = make_flow(world.workspace)
    r = client_of(world.member).post(
        f"/w/{world.workspace.slug}/config/flows/{flow.pk}/mappings/", {"target": "X"}
    )
    assert r.status_code == 403
    body = r.content.decode()
    assert 'class="topbar"' in body and 'aria-label="Main"' in body  # the site's shell
    assert "Only a workspace admin can do this." in body
    assert "Workspace admin: admin" in body
    assert "403 Forbidden" not in body


def test_a_refusal_for_another_team_names_that_team_and_its_people(world):
    from monitoring.models import Alert

    flow = make_flow(world.workspace)
    alert = Alert.objects.create(
        workspace=world.workspace, flow=flow, kind=Alert.Kind.STALLED, team_slug="ops"
    )
    marketer = make_member(world.workspace, "mia", teams=["marketing"])
    r = client_of(marketer).post(f"/w/{world.workspace.slug}/alerts/{alert.pk}/acknowledge/")
    assert r.status_code == 403
    body = r.content.decode()
    assert "Only the Ops team or a workspace admin can do this." in body
    assert "The Ops team: teammate" in body and "Workspace admin: admin" in body
