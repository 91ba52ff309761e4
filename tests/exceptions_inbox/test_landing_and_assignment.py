"""Where each persona lands in the inbox, assigning to oneself, the assignee menu, and the links
from a group to the flow and to each business key's timeline."""

from __future__ import annotations

import re

from django.urls import reverse

from exceptions_inbox.actions import Action, apply_action
from exceptions_inbox.models import Activity
from tests.exceptions_inbox.factories import make_group
from tests.factories import make_member


def inbox_url(ws: str = "acme") -> str:
    return reverse("exceptions_inbox:inbox", kwargs={"ws": ws})


def group_url(group, name="group"):
    return reverse(f"exceptions_inbox:{name}", kwargs={"ws": group.workspace.slug, "pk": group.pk})


def listed(response):
    return {row.record.pk for row in response.context["table"].page.object_list}


def a_group_per_team(world):
    ops = make_group(world.workspace, sku="OPS-1")  # sku_mapping_gap: ops
    finance = make_group(world.workspace, kind="order_total_mismatch", sku="")
    marketing = make_group(world.workspace, kind="consent_sync_failed", sku="")
    return ops, finance, marketing


def test_a_member_lands_on_their_teams_groups(client, world):
    ops, _finance, marketing = a_group_per_team(world)
    client.force_login(make_member(world.workspace, "mkt", teams=["marketing"]))

    response = client.get(inbox_url())

    assert response.context["tab"] == "team"
    assert listed(response) == {marketing.pk}
    assert 'data-tab="team"' in response.content.decode()
    # Every group is a click away.
    assert listed(client.get(inbox_url(), {"tab": "open"})) >= {ops.pk, marketing.pk}


def test_an_admin_lands_on_every_group_for_review(client, world):
    groups = a_group_per_team(world)
    client.force_login(world.admin)

    response = client.get(inbox_url())

    assert response.context["tab"] == "review"
    assert listed(response) == {g.pk for g in groups}


def test_a_member_in_no_team_lands_on_every_group(client, world):
    groups = a_group_per_team(world)
    client.force_login(world.member)

    response = client.get(inbox_url())

    assert response.context["tab"] == "review"
    assert listed(response) == {g.pk for g in groups}


def test_assign_to_me_assigns_the_group_to_the_person_in_one_click(client, world):
    group = make_group(world.workspace)
    client.force_login(world.teammate)
    html = client.get(group_url(group)).content.decode()
    assert "data-assign-me" in html
    form = re.search(r'<form[^>]*id="assign-me".*?</form>', html, re.S)
    assert form is not None
    assert f'name="assignee" value="{world.teammate.pk}"' in form.group(0)

    response = client.post(
        group_url(group, "group-action"),
        {"action": "assign", "assignee": world.teammate.pk},
        follow=True,
    )

    group.refresh_from_db()
    assert group.assignee == world.teammate
    assert "Assigned to teammate." in response.content.decode()
    assert group.activities.last().kind == Activity.Kind.ASSIGNED
    # Already theirs: no second "Assign to me".
    assert "data-assign-me" not in response.content.decode()


def test_the_assignee_menu_shows_the_current_assignee(client, world):
    group = make_group(world.workspace)
    ops_person = make_member(world.workspace, "ops", teams=["ops"])
    apply_action(group, Action.ASSIGN, world.admin, assignee=ops_person)
    client.force_login(world.teammate)

    html = client.get(group_url(group)).content.decode()

    menu = re.search(r'<select name="assignee".*?</select>', html, re.S)
    assert menu is not None
    assert f'<option value="{ops_person.pk}" selected>ops</option>' in menu.group(0)
    assert '<option value="" selected>' not in menu.group(0)


def test_order_numbers_skus_and_emails_link_to_their_timeline(client, world):
    group = make_group(world.workspace, email="jo@example.com")
    client.force_login(world.teammate)

    html = client.get(group_url(group)).content.decode()

    events = reverse("monitoring:events", kwargs={"ws": "acme"})
    occurrence = group.occurrences.get()
    assert f'href="{events}?q={occurrence.order_number}"' in html
    assert f'href="{events}?q=AB-12/RED"' in html
    assert f'href="{events}?q=jo%40example.com"' in html


def test_a_lag_group_links_to_its_flow(client, world):
    group = make_group(world.workspace, kind="lag", sku="", flow_key="flow:7")
    client.force_login(world.teammate)

    html = client.get(group_url(group)).content.decode()

    flows = reverse("monitoring:flows", kwargs={"ws": "acme"})
    assert f'href="{flows}?flow=7"' in html
    assert "data-open-flow" in html


def test_a_group_of_no_flow_links_to_none(client, world):
    group = make_group(world.workspace, kind="malformed_payload", sku="", flow_key="")
    client.force_login(world.admin)

    assert "data-open-flow" not in client.get(group_url(group)).content.decode()


def test_an_empty_team_tab_says_where_the_other_teams_groups_are(client, world):
    make_group(world.workspace)  # ops'
    client.force_login(make_member(world.workspace, "mkt", teams=["marketing"]))

    html = client.get(inbox_url()).content.decode()

    assert "Nothing for your team. For review has 1 group(s) of other teams." in html
