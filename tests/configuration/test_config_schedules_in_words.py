"""Schedules are listed in words: what each job does and for which flow, and when it runs
("every day at 03:17 UTC", not "17 3 * * *"), with its actions at hand."""

from __future__ import annotations

import pytest

from monitoring.configuration.schedule_words import when
from monitoring.models import Flow
from monitoring.watch.schedules import ensure_schedules
from tests.factories import make_connection


@pytest.mark.parametrize(
    ("every_seconds", "crontab", "said"),
    [
        (300, "", "every 5 minutes"),
        (60, "", "every minute"),
        (3600, "", "every hour"),
        (90, "", "every 90 seconds"),
        (7200, "", "every 2 hours"),
        (None, "17 3 * * *", "every day at 03:17 UTC"),
        (None, "0 6,18 * * *", "every day at 06:00 and 18:00 UTC"),
        (None, "30 7 * * 1", "every Monday at 07:30 UTC"),
        (None, "0 8 * * 1-5", "every weekday at 08:00 UTC"),
        (None, "*/15 * * * *", "every 15 minutes"),
        (None, "5 * * * *", "every hour at 5 minutes past"),
        (None, "0 */4 * * *", "every 4 hours, on the hour"),
        (None, "20 */2 * * *", "every 2 hours, at 20 minutes past"),
        (None, "0 2 1 * *", "on day 1 of every month at 02:00 UTC"),
        (
            None,
            "0 8-20 * * *",
            "on the crontab “0 8-20 * * *” (minute hour day month weekday, UTC)",
        ),
    ],
)
def test_intervals_and_crontabs_read_as_words(every_seconds, crontab, said):
    assert when(every_seconds, crontab) == said


@pytest.mark.django_db
def test_the_schedules_page_names_each_job_and_its_flow_in_words(world):
    from django.test import Client

    flow = Flow.objects.create(
        workspace=world.workspace,
        name="Demo ERP → DotDigital",
        source=make_connection(world.workspace, "canonical", name="Demo ERP"),
        destination=make_connection(world.workspace, "dotdigital"),
    )
    ensure_schedules()
    client = Client()
    client.force_login(world.admin)
    page = client.get(f"/w/{world.workspace.slug}/config/schedules/").content.decode()
    assert "Opt-out write-back for Demo ERP → DotDigital" in page
    assert "Reconciliation for Demo ERP → DotDigital" in page
    assert "every day at 03:17 UTC" in page and "every 5 minutes" in page
    assert "17 3 * * *" not in page and f"flow {flow.pk}" not in page
    assert "Writes the opt-outs made in DotDigital back to the source" in page
    assert ">Disable</button>" in page and ">Remove</button>" in page and ">Edit</a>" in page

    client.force_login(world.member)
    page = client.get(f"/w/{world.workspace.slug}/config/schedules/").content.decode()
    assert "every day at 03:17 UTC" in page and ">Disable</button>" not in page
