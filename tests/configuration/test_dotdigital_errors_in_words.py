"""DotDigital's errors are shown as sentences saying what happens next, never as the HTTP
exchange ("GET /v2/data-fields -> 429 : Too Many Requests"), wherever a page shows them."""

from __future__ import annotations

import pytest

from connectors.dotdigital import errors
from connectors.models import Connection
from monitoring.models import Flow
from monitoring.pipeline.destination import pause_destination
from monitoring.pipeline.flows import install_defaults
from tests.factories import make_connection

RAW = "-> 4"


@pytest.fixture
def flow(world, sandbox):
    dd = make_connection(
        world.workspace,
        "dotdigital",
        name="DotDigital",
        credentials={"api_user": sandbox.auth[0], "password": sandbox.auth[1]},
        options={"api_endpoint": sandbox.url, "discovery_url": sandbox.url},
    )
    source = make_connection(world.workspace, "canonical", name="ERP")
    flow = Flow.objects.create(workspace=world.workspace, name="ERP", source=source, destination=dd)
    install_defaults(flow)
    return flow


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            errors.RateLimited(
                "GET /v2/data-fields -> 429 : Too Many Requests",
                status=429,
                text="Too Many Requests",
                retry_after=30,
            ),
            "DotDigital is limiting how many calls this account may make right now (for about "
            "30 s). Syncdesk tries again by itself; nothing is lost.",
        ),
        (
            errors.ServerError("POST /v2/contacts -> 503 : Service Unavailable", status=503),
            "DotDigital had a temporary problem on its side. Syncdesk tries again by itself; "
            "nothing is lost.",
        ),
        (
            errors.DataFieldError(
                "PATCH /contacts/v3/x -> 400 ERROR_DATAFIELD: LTV is not a number",
                status=400,
                code="ERROR_DATAFIELD",
                text="LTV is not a number",
            ),
            "DotDigital refused a data field or its value. DotDigital said: “LTV is not a number”. "
            "Sending it again unchanged cannot succeed: correct the mapping or the data first.",
        ),
    ],
)
def test_each_kind_of_error_reads_as_a_sentence_with_what_happens_next(error, sentence):
    assert errors.explain(error) == sentence


def test_a_rate_limited_account_read_on_the_mappings_page_is_a_sentence(
    admin_client, world, flow, sandbox
):
    sandbox.faults(rate_limit_rate=1.0, match="/v2/data-fields")
    try:
        page = admin_client.get(f"/w/{world.workspace.slug}/config/flows/{flow.pk}/mappings/")
    finally:
        sandbox.faults()
    body = page.content.decode()
    assert "Could not read the account&#x27;s data fields. DotDigital is limiting" in body
    assert "Reload the page in a minute." in body
    assert RAW not in body and "Too Many Requests" not in body


def test_a_paused_connection_says_why_and_what_to_do_on_the_flows_page(admin_client, world, flow):
    pause_destination(
        flow.destination_id,
        errors.AuthenticationFailed(
            "GET /v2/account-info -> 401 : Unauthorized", status=401, text="Unauthorized"
        ),
    )
    conn = Connection.objects.get(pk=flow.destination_id)
    assert conn.paused_reason.startswith("DotDigital refused the connection's API user")
    body = admin_client.get(f"/w/{world.workspace.slug}/flows/").content.decode()
    assert "An admin corrects it on the DotDigital connection&#x27;s page" in body
    assert RAW not in body and "Unauthorized" not in body
