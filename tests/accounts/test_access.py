from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory

from accounts.access import get_object_for_user, get_workspace_for_user
from connectors.models import Connection
from tests.factories import make_connection, make_member, make_workspace


def request_as(user):
    request = RequestFactory().get("/")
    request.user = user
    return request


def test_a_new_workspace_starts_with_the_four_teams(db):
    workspace = make_workspace()
    assert sorted(workspace.teams.values_list("slug", flat=True)) == [
        "admins",
        "finance",
        "marketing",
        "ops",
    ]


def test_it_404s_outside_the_users_workspaces(world):
    with pytest.raises(Http404):
        get_workspace_for_user(request_as(world.outsider), world.workspace.slug)


def test_it_404s_for_a_workspace_that_does_not_exist(world):
    with pytest.raises(Http404):
        get_workspace_for_user(request_as(world.admin), "nope")


def test_a_member_reads_but_only_the_owning_team_or_an_admin_acts(world):
    member = get_workspace_for_user(request_as(world.member), "acme")
    teammate = get_workspace_for_user(request_as(world.teammate), "acme")
    admin = get_workspace_for_user(request_as(world.admin), "acme")
    with pytest.raises(PermissionDenied):
        member.require_team("ops")
    teammate.require_team("ops")
    with pytest.raises(PermissionDenied):
        teammate.require_team("finance")
    admin.require_team("finance")
    admin.require_admin()
    with pytest.raises(PermissionDenied):
        teammate.require_admin()


def test_objects_of_another_workspace_are_404_even_with_a_valid_slug(world):
    theirs = make_connection(world.other)
    with pytest.raises(Http404):
        get_object_for_user(request_as(world.admin), Connection, "acme", pk=theirs.pk)
    mine = make_connection(world.workspace)
    obj, access = get_object_for_user(request_as(world.member), Connection, "acme", pk=mine.pk)
    assert obj == mine and access.workspace == world.workspace


def test_a_junk_id_is_a_404_not_a_500(world):
    with pytest.raises(Http404):
        get_object_for_user(request_as(world.admin), Connection, "acme", pk="abc")


def test_an_agency_person_reaches_each_of_their_workspaces(db):
    brand_a, brand_b = make_workspace("brand-a"), make_workspace("brand-b")
    agent = make_member(brand_a, "agent", role="admin")
    brand_b.add_member(agent)
    assert get_workspace_for_user(request_as(agent), "brand-a").is_admin
    assert not get_workspace_for_user(request_as(agent), "brand-b").is_admin
