from __future__ import annotations

from django.urls import reverse

from tests.factories import make_member, make_user, make_workspace


def test_a_person_with_one_workspace_lands_in_it(client, world):
    client.force_login(world.member)
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("monitoring:overview", kwargs={"ws": "acme"})


def test_a_person_with_several_workspaces_chooses(client, world):
    world.other.add_member(world.member)
    client.force_login(world.member)
    response = client.get("/")
    assert response.status_code == 200
    assert b"Acme" in response.content and b"Other" in response.content


def test_a_person_with_no_workspace_is_told_so(client, db):
    client.force_login(make_user())
    response = client.get("/")
    assert b"not a member of any workspace" in response.content


def test_every_page_sends_anonymous_visitors_to_sign_in(client, world):
    response = client.get("/w/acme/inbox/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/w/acme/inbox/")


def test_sign_in_with_a_wrong_password_says_so(client, world):
    response = client.post("/login/", {"username": "member", "password": "wrong"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content


def test_the_switcher_lists_only_the_users_workspaces(client, world):
    make_workspace("secret-brand")
    world.other.add_member(world.member)
    client.force_login(world.member)
    html = client.get("/w/acme/").content.decode()
    assert "Other" in html and "Secret-Brand" not in html


def test_an_admin_adds_a_member_to_a_team(client, world):
    client.force_login(world.admin)
    response = client.post(
        "/w/acme/config/teams/", {"action": "add", "team": "finance", "user": world.member.pk}
    )
    assert response.status_code == 302
    assert world.workspace.teams.get(slug="finance").members.filter(pk=world.member.pk).exists()


def test_a_member_cannot_change_teams(client, world):
    client.force_login(world.teammate)
    response = client.post(
        "/w/acme/config/teams/", {"action": "add", "team": "ops", "user": world.member.pk}
    )
    assert response.status_code == 403
    assert not world.workspace.teams.get(slug="ops").members.filter(pk=world.member.pk).exists()


def test_a_person_from_another_workspace_cannot_be_put_in_a_team(client, world):
    client.force_login(world.admin)
    response = client.post(
        "/w/acme/config/teams/", {"action": "add", "team": "ops", "user": world.outsider.pk}
    )
    assert response.status_code == 400
    assert b"That person is not in this workspace." in response.content


def test_the_teams_page_renders_its_fragment_for_htmx(client, world):
    client.force_login(world.member)
    response = client.get("/w/acme/config/teams/", HTTP_HX_REQUEST="true")
    assert b'id="teams"' in response.content
    assert b"<html" not in response.content


def test_pages_that_are_empty_say_so(client, world):
    client.force_login(world.member)
    for path, plainly in (
        ("/w/acme/inbox/", b"Nothing here"),
        ("/w/acme/flows/", b'class="empty"'),
        ("/w/acme/events/", b'class="empty"'),
    ):
        assert plainly in client.get(path).content, path


def test_the_page_shell_serves_htmx_locally_and_sends_csrf_in_hx_headers(client, world):
    client.force_login(world.member)
    html = client.get("/w/acme/").content.decode()
    assert 'src="/static/django_htmx/htmx' in html
    assert 'hx-headers=\'{"X-CSRFToken"' in html
    assert "unpkg" not in html and "cdn" not in html.lower()


def test_a_new_member_in_two_workspaces_sees_only_theirs(client, db):
    a = make_workspace("a")
    make_workspace("b")
    user = make_member(a, "solo")
    client.force_login(user)
    assert client.get("/w/b/").status_code == 404
