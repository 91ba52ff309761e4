"""The inbox pages at the HTTP boundary: tabs, filters, search, fragments, the group page and
its actions, the bulk bar, and who may do what."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from exceptions_inbox.actions import Action, apply_action
from exceptions_inbox.models import AssignmentNotice, ExceptionGroup
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from tests.exceptions_inbox.factories import make_group

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "results"}
S_VALUES = ExceptionGroup.State.values


def inbox_url(ws="acme", **params):
    from urllib.parse import urlencode

    url = reverse("exceptions_inbox:inbox", kwargs={"ws": ws})
    return f"{url}?{urlencode(params)}" if params else url


def group_url(group, name="group"):
    return reverse(f"exceptions_inbox:{name}", kwargs={"ws": group.workspace.slug, "pk": group.pk})


def records(response):
    """The groups (or occurrences) on the page of the response's table."""
    return [row.record for row in response.context["table"].page.object_list]


def test_it_lists_new_and_regressed_groups_for_review(client, world):
    new = make_group(world.workspace, sku="NEW-1")
    acknowledged = make_group(world.workspace, sku="ACK-1")
    apply_action(acknowledged, Action.ACKNOWLEDGE, world.teammate)
    regressed = make_group(world.workspace, sku="REG-1")
    apply_action(regressed, Action.RESOLVE, world.teammate)
    make_group(world.workspace, sku="REG-1")
    client.force_login(world.member)
    response = client.get(inbox_url())
    assert response.status_code == 200
    shown = {g.pk for g in records(response)}
    assert shown == {new.pk, regressed.pk}
    assert "Regressed" in response.content.decode()
    counts = {slug: count for slug, _label, count in response.context["tabs"]}
    assert counts == {
        "review": 2,
        "open": 3,
        "mine": 0,
        "team": 0,
        "snoozed": 0,
        "resolved": 0,
        "ignored": 0,
    }


@pytest.mark.parametrize(
    ("tab", "expected"),
    [
        ("open", {"a", "b"}),
        ("mine", {"b"}),
        ("team", {"a", "b", "s"}),
        ("snoozed", {"s"}),
        ("resolved", {"r"}),
        ("ignored", {"i"}),
    ],
)
def test_each_tab_shows_its_groups(client, world, tab, expected):
    groups = {name: make_group(world.workspace, sku=name) for name in "abrsi"}
    apply_action(groups["b"], Action.ASSIGN, world.admin, assignee=world.teammate)
    apply_action(groups["b"], Action.ACKNOWLEDGE, world.teammate)
    apply_action(groups["r"], Action.RESOLVE, world.teammate)
    apply_action(groups["i"], Action.IGNORE, world.teammate)
    apply_action(groups["s"], Action.SNOOZE, world.teammate, more=5)
    client.force_login(world.teammate)
    response = client.get(inbox_url(tab=tab))
    assert {g.subject_label for g in records(response)} == expected


def test_filters_by_kind_team_flow_and_age(client, world, time_machine):
    time_machine.move_to("2026-01-01T09:00:00Z", tick=False)
    old = make_group(world.workspace, sku="OLD")
    time_machine.move_to("2026-01-10T09:00:00Z", tick=False)
    mismatch = make_group(
        world.workspace, kind="order_total_mismatch", sku="SO-1", flow_key="flow:2"
    )
    gap = make_group(world.workspace, sku="GAP")
    client.force_login(world.member)

    def shown(**params):
        response = client.get(inbox_url(tab="open", **params))
        return {g.pk for g in records(response)}

    assert shown(kind="order_total_mismatch") == {mismatch.pk}
    assert shown(team="ops") == {old.pk, gap.pk}
    assert shown(flow="flow:2") == {mismatch.pk}
    assert shown(age="24h") == {mismatch.pk, gap.pk}
    assert shown(age="old") == {old.pk}
    assert shown(kind="not-a-kind") == {old.pk, mismatch.pk, gap.pk}  # a stale link: ignored


def test_search_finds_groups_by_any_occurrences_keys(client, world):
    wanted = make_group(world.workspace, sku="AB-12")
    record_occurrence(
        workspace=world.workspace,
        kind="sku_mapping_gap",
        event_key="e-x",
        stage="stage",
        message="m",
        subject_key="sku_mapping_gap:AB-12",
        flow_key="flow:1",
        sku="AB-12",
        email="jo@example.com",
        order_number="SO-777",
        source_event_id="mintsoft-42",
    )
    make_group(world.workspace, sku="ZZ-9")
    client.force_login(world.member)
    for text in ("jo@example.com", "Jo@Example.com", "SO-777", "AB-12", "mintsoft-42"):
        response = client.get(inbox_url(tab="open", q=text))
        assert [g.pk for g in records(response)] == [wanted.pk], text
    response = client.get(inbox_url(tab="open", q="nobody@example.com"))
    assert list(records(response)) == []


def test_an_htmx_request_gets_only_the_results_fragment(client, world):
    make_group(world.workspace)
    client.force_login(world.member)
    response = client.get(inbox_url(tab="open", sort="first_seen"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="results"' in html and "<html" not in html and 'id="filters"' not in html
    assert 'hx-swap-oob="true"' in html  # the filter form's tab field follows the tab
    # sort and page links keep their href and fetch the fragment
    assert 'hx-get="/w/acme/inbox/?' in html and 'href="/w/acme/inbox/?' in html


def test_pages_are_read_without_counting_every_row(client, world):
    for n in range(30):
        make_group(world.workspace, sku=f"S-{n}")
    client.force_login(world.member)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(inbox_url(tab="open"))
    assert len(records(response)) == 25
    assert response.context["table"].page.has_next()
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 200" in sql.upper() for sql in counts), counts
    second = client.get(inbox_url(tab="open", page=2))
    assert len(records(second)) == 5


def test_per_page_is_capped(client, world):
    make_group(world.workspace)
    client.force_login(world.member)
    response = client.get(inbox_url(per_page=100000))
    assert response.context["table"].paginator.per_page == 100


def test_the_cross_workspace_inbox_shows_every_workspace_of_the_person_and_no_other(client, world):
    mine = make_group(world.workspace, sku="MINE")
    theirs = make_group(world.other, sku="THEIRS")
    client.force_login(world.teammate)
    response = client.get(reverse("exceptions_inbox:all") + "?tab=open")
    assert {g.pk for g in records(response)} == {mine.pk}
    # searching by the other workspace's keys finds nothing either
    response = client.get(reverse("exceptions_inbox:all") + "?tab=open&q=THEIRS")
    assert list(records(response)) == []
    world.other.add_member(world.teammate)
    response = client.get(reverse("exceptions_inbox:all") + "?tab=open")
    assert {g.pk for g in records(response)} == {mine.pk, theirs.pk}
    assert "Workspace" in response.content.decode()


def test_tick_boxes_are_offered_only_on_groups_the_person_may_change(client, world):
    make_group(world.workspace, sku="OPS-1")
    make_group(world.workspace, kind="order_total_mismatch", sku="FIN-1")
    client.force_login(world.teammate)
    html = client.get(inbox_url(tab="open")).content.decode()
    assert html.count('name="groups"') == 1
    client.force_login(world.member)
    html = client.get(inbox_url(tab="open")).content.decode()
    assert 'name="groups"' not in html and 'id="bulk"' in html and "hidden" in html


def test_the_group_page_shows_occurrences_payloads_history_and_actions(client, world, hooks):
    group = make_group(world.workspace, events=3)
    client.force_login(world.teammate)
    html = client.get(group_url(group)).content.decode()
    assert (
        "SO-" in html and "&quot;qty&quot;: 1" in html
    )  # the stored detail when no hook renders it
    assert 'value="resolve"' in html and 'value="acknowledge"' in html
    assert "Opened" in html  # the history
    hooks.register(
        "sku_mapping_gap",
        render_occurrence=lambda o: {
            "title": "Order from Mintsoft",
            "payload": {"raw": o.event_key},
        },
    )
    html = client.get(group_url(group)).content.decode()
    assert "Order from Mintsoft" in html and "&quot;raw&quot;: &quot;event:" in html


def test_the_group_page_offers_no_actions_to_a_member_outside_the_team(client, world):
    group = make_group(world.workspace)
    client.force_login(world.member)
    html = client.get(group_url(group)).content.decode()
    assert 'value="resolve"' not in html and "Only the Ops team or an admin" in html
    response = client.post(group_url(group, "group-action"), {"action": "resolve"})
    assert response.status_code == 403


def test_the_occurrences_table_pages_as_a_fragment(client, world):
    group = make_group(world.workspace, events=30)
    client.force_login(world.member)
    response = client.get(
        group_url(group) + "?page=2", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="occurrences"
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="occurrences">') and "<h1>" not in html
    assert html.count("<tr") == 1 + 5


def test_a_teammate_resolves_a_group_with_a_note(client, world, hooks):
    hooks.register("sku_mapping_gap", on_resolve=hooks.recorder("on_resolve"))
    group = make_group(world.workspace, events=2)
    client.force_login(world.teammate)
    response = client.post(
        group_url(group, "group-action"), {"action": "resolve", "note": "dropped"}
    )
    assert response.status_code == 302
    group.refresh_from_db()
    assert group.state == "resolved"
    assert set(group.occurrences.values_list("state", flat=True)) == {"skipped"}
    [(_name, (_group, occurrences, actor, note))] = hooks.calls
    assert (len(occurrences), actor, note) == (2, world.teammate, "dropped")


def test_an_illegal_action_is_reported_not_applied(client, world):
    group = make_group(world.workspace)
    apply_action(group, Action.RESOLVE, world.teammate)
    client.force_login(world.teammate)
    response = client.post(group_url(group, "group-action"), {"action": "acknowledge"}, follow=True)
    assert "Cannot acknowledge: it is resolved." in response.content.decode()


def test_a_snooze_without_its_number_is_a_field_error(client, world):
    group = make_group(world.workspace)
    client.force_login(world.teammate)
    response = client.post(group_url(group, "group-action"), {"action": "snooze", "snooze": "more"})
    assert response.status_code == 400
    assert response.context["action_form"].errors == {"more": ["How many more occurrences?"]}


def test_snooze_for_an_hour_from_the_group_page(client, world):
    group = make_group(world.workspace)
    client.force_login(world.teammate)
    client.post(group_url(group, "group-action"), {"action": "snooze", "snooze": "1h"})
    group.refresh_from_db()
    assert group.state == "snoozed" and group.snoozed_until is not None


def test_assigning_from_the_group_page_queues_the_notice_mail(
    client, world, django_capture_on_commit_callbacks
):
    group = make_group(world.workspace)
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            group_url(group, "group-action"), {"action": "assign", "assignee": world.teammate.pk}
        )
    assert response.status_code == 302
    assert AssignmentNotice.objects.filter(assignee=world.teammate, sent_at=None).count() == 1
    assert len(callbacks) == 1


def test_assigning_someone_outside_the_workspace_is_a_field_error(client, world):
    group = make_group(world.workspace)
    client.force_login(world.admin)
    response = client.post(
        group_url(group, "group-action"), {"action": "assign", "assignee": world.outsider.pk}
    )
    assert response.status_code == 400
    assert response.context["action_form"].errors["assignee"] == [
        "That person is not in this workspace."
    ]


def test_any_member_comments_and_an_empty_comment_is_a_field_error(client, world):
    group = make_group(world.workspace)
    client.force_login(world.member)
    client.post(group_url(group, "group-comment"), {"note": "Marketing saw this too"})
    assert group.activities.last().note == "Marketing saw this too"
    response = client.post(group_url(group, "group-comment"), {"note": "  "})
    assert response.status_code == 400
    assert "This field is required." in response.context["comment_form"].errors["note"]


def test_the_sku_fix_suggests_the_nearest_catalogue_skus_and_adds_the_alias(client, world, hooks):
    catalogue = ["AB-12-RED", "AB-12-BLUE", "ZZ-99", "KETTLE-1", "AB12RED"]
    fixed = []

    def fix(group, data, actor):
        fixed.append((group.pk, data, actor))
        # The engine adds the alias and retries every event the SKU blocked.
        clear_occurrences(group.workspace, group.occurrences.values_list("event_key", flat=True))
        return f"Alias {data['alias']} → {data['sku']} added; 40 events retried."

    hooks.register("sku_mapping_gap", fix=fix, suggest=lambda group: catalogue)
    group = make_group(world.workspace, sku="AB-12/RED", events=40)
    client.force_login(world.teammate)
    response = client.get(group_url(group))
    suggested = [s.value for s, _one_click in response.context["suggestions"]]
    assert suggested[0] in {"AB-12-RED", "AB12RED"} and "ZZ-99" not in suggested
    assert 'value="AB-12-RED"' in response.content.decode()

    response = client.post(
        group_url(group, "group-fix"), {"catalogue_sku": "AB-12-RED"}, follow=True
    )
    assert fixed == [(group.pk, {"alias": "AB-12/RED", "sku": "AB-12-RED"}, world.teammate)]
    assert "40 events retried" in response.content.decode()
    group.refresh_from_db()
    assert group.state == "resolved"
    assert list(group.activities.values_list("kind", flat=True))[-2:] == ["fixed", "auto_resolved"]


def test_a_fix_the_engine_refuses_is_an_error_on_the_field(client, world, hooks):
    def fix(group, data, actor):
        raise ValueError("No product has the SKU NOPE.")

    hooks.register("sku_mapping_gap", fix=fix)
    group = make_group(world.workspace)
    client.force_login(world.teammate)
    response = client.post(group_url(group, "group-fix"), {"catalogue_sku": "NOPE"})
    assert response.status_code == 400
    assert response.context["fix_form"].errors == {
        "catalogue_sku": ["No product has the SKU NOPE."]
    }
    assert not group.activities.filter(kind="fixed").exists()


def test_recording_a_contacts_email_hands_it_to_the_engine(client, world, hooks):
    seen = []
    hooks.register(
        "contact_without_email", fix=lambda g, data, actor: seen.append(data) or "Retried 1 event."
    )
    group = make_group(world.workspace, kind="contact_without_email", sku="")
    client.force_login(world.teammate)
    response = client.post(group_url(group, "group-fix"), {"email": "not an email"})
    assert response.context["fix_form"].errors["email"] == ["Enter a valid email address."]
    client.post(group_url(group, "group-fix"), {"email": "jo@example.com"})
    assert seen == [{"email": "jo@example.com"}]


def test_bulk_acknowledge_on_a_mixed_selection_applies_where_legal_and_reports_the_rest(
    client, world
):
    a = make_group(world.workspace, sku="A")
    b = make_group(world.workspace, sku="B")
    apply_action(b, Action.ACKNOWLEDGE, world.teammate)
    c = make_group(world.workspace, sku="C")
    apply_action(c, Action.RESOLVE, world.teammate)
    client.force_login(world.teammate)
    response = client.post(
        reverse("exceptions_inbox:bulk", kwargs={"ws": "acme"}),
        {"action": "acknowledge", "groups": [a.pk, b.pk, c.pk], "next": "/w/acme/inbox/?tab=open"},
        follow=True,
    )
    assert response.redirect_chain == [("/w/acme/inbox/?tab=open", 302)]
    html = response.content.decode()
    assert (
        "Acknowledge: 1 group(s). Left 2 unchanged: 1 because it is acknowledged, "
        "1 because it is resolved."
    ) in html
    assert dict(ExceptionGroup.objects.values_list("subject_label", "state")) == {
        "A": "acknowledged",
        "B": "acknowledged",
        "C": "resolved",
    }


def test_bulk_from_htmx_sends_the_list_back_into_the_results_region(client, world):
    a = make_group(world.workspace)
    client.force_login(world.teammate)
    response = client.post(
        reverse("exceptions_inbox:bulk", kwargs={"ws": "acme"}),
        {"action": "snooze", "snooze": "1d", "groups": [a.pk], "next": "/w/acme/inbox/?tab=open"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert '"target": "#results"' in response["HX-Location"]
    a.refresh_from_db()
    assert a.state == "snoozed"


def test_bulk_refuses_groups_of_another_team_outright(client, world):
    ops = make_group(world.workspace, sku="OPS")
    finance = make_group(world.workspace, kind="order_total_mismatch", sku="FIN")
    client.force_login(world.teammate)
    response = client.post(
        reverse("exceptions_inbox:bulk", kwargs={"ws": "acme"}),
        {"action": "acknowledge", "groups": [ops.pk, finance.pk]},
    )
    assert response.status_code == 403
    assert set(ExceptionGroup.objects.values_list("state", flat=True)) == {"open"}


def test_bulk_cannot_reach_another_workspaces_groups(client, world):
    theirs = make_group(world.other)
    client.force_login(world.admin)
    response = client.post(
        reverse("exceptions_inbox:all-bulk"), {"action": "acknowledge", "groups": [theirs.pk]}
    )
    assert response.status_code == 404


def test_bulk_retry_and_snooze_until_more_occurrences(client, world, hooks):
    hooks.register(
        "sku_mapping_gap",
        retry=lambda occ: clear_occurrences(world.workspace, [o.event_key for o in occ]),
    )
    a = make_group(world.workspace, sku="A", events=2)
    b = make_group(world.workspace, sku="B")
    client.force_login(world.teammate)
    url = reverse("exceptions_inbox:bulk", kwargs={"ws": "acme"})
    client.post(url, {"action": "snooze", "snooze": "more", "more": 3, "groups": [a.pk]})
    a.refresh_from_db()
    assert (a.state, a.snooze_until_count) == ("snoozed", 5)
    client.post(url, {"action": "retry", "groups": [a.pk, b.pk]})
    assert set(ExceptionGroup.objects.values_list("state", flat=True)) == {"resolved"}


def test_a_bulk_action_without_ticked_groups_says_so(client, world):
    client.force_login(world.teammate)
    response = client.post(
        reverse("exceptions_inbox:bulk", kwargs={"ws": "acme"}),
        {"action": "acknowledge"},
        follow=True,
    )
    assert "Tick the groups to act on." in response.content.decode()


def test_next_never_leaves_the_site(client, world):
    a = make_group(world.workspace)
    client.force_login(world.teammate)
    response = client.post(
        reverse("exceptions_inbox:bulk", kwargs={"ws": "acme"}),
        {"action": "acknowledge", "groups": [a.pk], "next": "https://evil.example/"},
    )
    assert response["Location"] == "/w/acme/inbox/"


def test_the_group_page_reads_a_fixed_number_of_queries_whatever_the_page_holds(client, world):
    small = make_group(world.workspace, sku="SMALL", events=2)
    large = make_group(world.workspace, sku="LARGE", events=30)
    client.force_login(world.teammate)
    client.get(group_url(small))
    client.get(group_url(large))
    with CaptureQueriesContext(connection) as few:
        client.get(group_url(small))
    with CaptureQueriesContext(connection) as many:
        client.get(group_url(large))
    assert len(many) == len(few)


def test_a_page_of_payloads_is_rendered_in_one_call_when_the_engine_offers_it(client, world, hooks):
    calls = []

    def render_many(occurrences):
        calls.append(len(occurrences))
        return {
            o.pk: {"title": f"Event {o.event_key}", "payload": {"n": o.pk}} for o in occurrences
        }

    hooks.register("sku_mapping_gap", render_occurrences=render_many)
    group = make_group(world.workspace, events=30)
    client.force_login(world.member)
    html = client.get(group_url(group)).content.decode()
    assert calls == [25]
    assert html.count("Event event:") == 25


def bulk_url(ws="acme"):
    return reverse("exceptions_inbox:bulk", kwargs={"ws": ws})


def test_every_match_applies_to_the_filters_matches_on_every_page_and_reports_the_rest(
    client, world
):
    ops = [make_group(world.workspace, sku=f"OPS-{n}") for n in range(30)]
    acknowledged = [make_group(world.workspace, sku=f"ACK-{n}") for n in range(3)]
    for group in acknowledged:
        apply_action(group, Action.ACKNOWLEDGE, world.admin)
    finance = [
        make_group(world.workspace, kind="order_total_mismatch", sku=f"FIN-{n}") for n in range(2)
    ]
    resolved = make_group(world.workspace, sku="DONE")
    apply_action(resolved, Action.RESOLVE, world.admin)
    client.force_login(world.teammate)
    page = client.get(inbox_url(tab="open"))
    assert len(records(page)) == 25  # the list shows one page of the 35 matches
    assert 'name="select" value="matching"' in page.content.decode()

    response = client.post(
        bulk_url(),
        {
            "action": "acknowledge",
            "select": "matching",
            "tab": "open",
            "next": inbox_url(tab="open"),
        },
        follow=True,
    )

    assert (
        "Acknowledge: 30 group(s). Left 5 unchanged: 3 because it is acknowledged, "
        "2 because only its team or an admin may change it."
    ) in response.content.decode()
    states = dict(ExceptionGroup.objects.values_list("pk", "state"))
    assert {states[g.pk] for g in ops + acknowledged} == {"acknowledged"}
    assert {states[g.pk] for g in finance} == {"open"}  # another team's: left alone, counted
    assert states[resolved.pk] == "resolved"  # not a match of the Open tab: not even counted


def test_every_match_keeps_to_the_kind_flow_and_search_of_the_list(client, world, hooks):
    hooks.register("sku_mapping_gap", on_resolve=hooks.recorder("on_resolve"))
    wanted = make_group(world.workspace, sku="AB-12", flow_key="flow:2")
    other_flow = make_group(world.workspace, sku="AB-12", flow_key="flow:1")
    other_sku = make_group(world.workspace, sku="ZZ-9", flow_key="flow:2")
    client.force_login(world.admin)
    response = client.post(
        bulk_url(),
        {
            "action": "resolve",
            "note": "renamed product",
            "select": "matching",
            "tab": "review",
            "kind": "sku_mapping_gap",
            "flow": "flow:2",
            "q": "AB-12",
        },
        follow=True,
    )
    assert "Resolve: 1 group(s)." in response.content.decode()
    states = dict(ExceptionGroup.objects.values_list("pk", "state"))
    assert states == {wanted.pk: "resolved", other_flow.pk: "open", other_sku.pk: "open"}
    [(_name, (_group, _occurrences, actor, note))] = hooks.calls
    assert (actor, note) == (world.admin, "renamed product")


def test_every_match_ignores_the_ticks_and_assigns_only_where_it_changes_something(
    client, world, django_capture_on_commit_callbacks
):
    a = make_group(world.workspace, sku="A")
    b = make_group(world.workspace, sku="B")
    apply_action(b, Action.ASSIGN, world.admin, assignee=world.teammate)
    c = make_group(world.workspace, sku="C")
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            bulk_url(),
            {
                "action": "assign",
                "assignee": world.teammate.pk,
                "select": "matching",
                "groups": [a.pk],  # a tick left on the page: every match wins
                "tab": "open",
            },
            follow=True,
        )
    assert (
        "Assign: 2 group(s). Left 1 unchanged: 1 because it is already assigned to teammate."
    ) in response.content.decode()
    assignees = dict(ExceptionGroup.objects.values_list("pk", "assignee"))
    assert assignees == {a.pk: world.teammate.pk, b.pk: world.teammate.pk, c.pk: world.teammate.pk}


def test_every_match_in_the_cross_workspace_inbox_stays_in_the_persons_workspaces(client, world):
    mine = make_group(world.workspace, sku="MINE")
    theirs = make_group(world.other, sku="THEIRS")
    client.force_login(world.admin)
    response = client.post(
        reverse("exceptions_inbox:all-bulk"),
        {"action": "acknowledge", "select": "matching", "tab": "open"},
        follow=True,
    )
    assert "Acknowledge: 1 group(s)." in response.content.decode()
    assert dict(ExceptionGroup.objects.values_list("pk", "state")) == {
        mine.pk: "acknowledged",
        theirs.pk: "open",
    }


def test_every_match_with_nothing_legal_changes_nothing_and_says_why(client, world):
    make_group(world.workspace, kind="order_total_mismatch", sku="FIN-1")
    client.force_login(world.teammate)
    response = client.post(
        bulk_url(), {"action": "ignore", "select": "matching", "tab": "open"}, follow=True
    )
    assert (
        "Ignore: 0 group(s). Left 1 unchanged: 1 because only its team or an admin may change it."
    ) in response.content.decode()
    assert set(ExceptionGroup.objects.values_list("state", flat=True)) == {"open"}


BULK_LEGAL = {
    "assign": {"open", "acknowledged", "snoozed"},
    "acknowledge": {"open"},
    "snooze": {"open", "acknowledged"},
    "resolve": {"open", "acknowledged", "snoozed"},
    "ignore": {"open", "acknowledged", "snoozed"},
    "retry": {"open", "acknowledged", "snoozed"},
}
BULK_AFTER = {
    "acknowledge": "acknowledged",
    "snooze": "snoozed",
    "resolve": "resolved",
    "ignore": "ignored",
}  # assign and retry leave the state as it was


@pytest.mark.parametrize("action", list(BULK_LEGAL))
def test_each_bulk_action_on_a_group_in_every_state_applies_where_legal_and_reports_the_rest(
    client, world, hooks, action
):
    retried = []
    hooks.register("sku_mapping_gap", retry=lambda occurrences: retried.extend(occurrences))
    groups = {state: make_group(world.workspace, sku=state.upper()) for state in S_VALUES}
    apply_action(groups["acknowledged"], Action.ACKNOWLEDGE, world.admin)
    apply_action(groups["snoozed"], Action.SNOOZE, world.admin, more=5)
    apply_action(groups["resolved"], Action.RESOLVE, world.admin)
    apply_action(groups["ignored"], Action.IGNORE, world.admin)
    client.force_login(world.teammate)
    data = {
        "action": action,
        "groups": [g.pk for g in groups.values()],
        "assignee": world.teammate.pk,
        "snooze": "1d",
    }

    response = client.post(bulk_url(), data, follow=True)

    legal = BULK_LEGAL[action]
    skipped = sorted(set(S_VALUES) - legal)
    reasons = ", ".join(f"1 because it is {state}" for state in skipped)
    label = Action(action).label
    assert (
        f"{label}: {len(legal)} group(s). Left {len(skipped)} unchanged: {reasons}."
    ) in response.content.decode()
    for state, group in groups.items():
        before = group.state
        group.refresh_from_db()
        if state in legal:
            assert group.state == BULK_AFTER.get(
                action, "ignored" if action == "ignore" else before
            )
            assert group.activities.last().actor == world.teammate
            if action == "assign":
                assert group.assignee == world.teammate
        else:
            assert (group.state, group.assignee) == (before, None)
    if action == "retry":
        assert sorted(o.group_id for o in retried) == sorted(groups[s].pk for s in legal)


def test_every_match_cannot_reach_a_workspace_the_person_is_not_in(client, world):
    make_group(world.workspace)
    client.force_login(world.outsider)
    response = client.post(bulk_url(), {"action": "acknowledge", "select": "matching"})
    assert response.status_code == 404
    assert set(ExceptionGroup.objects.values_list("state", flat=True)) == {"open"}


def test_every_match_by_a_member_of_no_team_changes_nothing(client, world):
    make_group(world.workspace, sku="OPS-1")
    ExceptionGroup.objects.create(  # a group no team owns (its team was deleted)
        workspace=world.workspace,
        kind="sku_mapping_gap",
        fingerprint="orphan",
        title="No team",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
    )
    client.force_login(world.member)
    response = client.post(
        bulk_url(), {"action": "acknowledge", "select": "matching", "tab": "open"}, follow=True
    )
    assert (
        "Acknowledge: 0 group(s). Left 2 unchanged: 2 because only its team or an admin may "
        "change it."
    ) in response.content.decode()
    assert set(ExceptionGroup.objects.values_list("state", flat=True)) == {"open"}
