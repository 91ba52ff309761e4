"""Erasure: `forget_contact` and the privacy page forget one person, audited without their email."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import Client

from accounts.models import ConfigChange
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Customer, CustomerKey, Order, SourceEvent, WebhookRequest
from monitoring.privacy.erasure import email_digest, forget_contact
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.engine import Source, stage

JO = "jo@example.com"
KEPT_BY_DESIGN = {"monitoring.suppression"}  # opt-outs are kept so nobody re-mails them


def rows_naming(email: str) -> list[str]:
    """Every row of every table that still holds the email (bodies and JSON included)."""
    found = []
    for model in apps.get_models():
        if model._meta.label_lower in KEPT_BY_DESIGN:
            continue
        for row in model._default_manager.values_list():
            text = " ".join(
                bytes(v).decode("utf-8", "replace")
                if isinstance(v, bytes | memoryview)
                else json.dumps(v, default=str)
                if isinstance(v, dict | list)
                else str(v)  # fmt: skip
                for v in row
            )
            if email in text.lower():
                found.append(f"{model._meta.label_lower}: {text[:200]}")
    return found


@pytest.fixture
def shop(world):
    return Source(world.workspace, "shop")


def test_forget_contact_erases_a_persons_local_data_and_keeps_the_timeline(shop, world):
    own = shop.post(shop.order("1001", email="  JO@Example.com ")).json()["request_id"]
    shared = shop.post([shop.order("1002", email=JO), shop.order("2001", email="ann@example.com")])
    shop.post(shop.dispatch("1001"))
    shop.post(json.dumps({"note": f"broken body from {JO}"}).encode())  # malformed, names jo
    no_sku = shop.order("1003", email=JO, total="5.00")
    no_sku["data"]["lines"][0]["sku"] = "NOPE"
    shop.post(no_sku)
    stage()
    assert Customer.objects.filter(email=JO).exists()
    assert rows_naming(JO)
    jo_events = list(SourceEvent.objects.filter(order__order_number__in=["1001", "1002", "1003"]))
    ann_event = SourceEvent.objects.get(order__order_number="2001")

    report = forget_contact(JO.upper(), world.workspace, actor=world.admin)

    assert rows_naming(JO) == []
    assert not Customer.objects.filter(email=JO).exists()
    assert Customer.objects.filter(email="ann@example.com").exists()
    assert not CustomerKey.objects.filter(customer__email=JO).exists()
    order = Order.objects.get(order_number="1001")  # the books keep the order, not the person
    assert order.email == "" and order.customer is None and order.grand_total is not None
    for event in SourceEvent.objects.filter(pk__in=[e.pk for e in jo_events]):
        assert event.envelope["redacted"] == "erasure"
        assert event.envelope["event_type"] in ("order.created", "shipment.dispatched")
        assert event.state  # the timeline still reads
    assert (
        SourceEvent.objects.get(pk=ann_event.pk).envelope["identity"]["email"] == "ann@example.com"
    )
    assert bytes(WebhookRequest.objects.get(pk=own).body) == b""
    shared_body = WebhookRequest.objects.get(pk=shared.json()["request_id"])
    assert bytes(shared_body.body) == b""  # redacted whole, ann's event with it
    assert report.shared_bodies == 1
    assert report.customers == 1 and report.events >= 3 and report.bodies >= 3
    assert Occurrence.objects.exists() and ExceptionGroup.objects.exists()  # redacted, not gone

    change = ConfigChange.objects.get(action=ConfigChange.Action.DELETED)
    assert change.actor == world.admin
    assert email_digest(JO) in change.note
    audit_text = json.dumps([change.note, change.object_label, change.changes]).lower()
    assert JO not in audit_text


def test_forget_contact_command_erases_in_every_workspace_without_echoing_the_email(shop, world):
    other = Source(world.other, "other-shop")
    shop.post(shop.order("1", email=JO))
    other.post(other.order("2", email=JO))
    stage()
    out = __import__("io").StringIO()
    call_command("forget_contact", JO, stdout=out)
    assert rows_naming(JO) == []
    assert JO not in out.getvalue()
    assert ConfigChange.objects.filter(action=ConfigChange.Action.DELETED).count() == 2


def test_forget_contact_command_can_be_limited_to_one_workspace(shop, world):
    other = Source(world.other, "other-shop")
    shop.post(shop.order("1", email=JO))
    other.post(other.order("2", email=JO))
    stage()
    call_command("forget_contact", JO, "--workspace", world.other.slug, stdout=__import__("io").StringIO())  # fmt: skip
    assert Customer.objects.filter(email=JO, workspace=world.workspace).exists()
    assert not Customer.objects.filter(email=JO, workspace=world.other).exists()


def test_an_admin_erases_from_the_privacy_page(shop, world):
    shop.post(shop.order("1", email=JO))
    stage()
    web = Client()
    web.force_login(world.admin)
    url = f"/w/{world.workspace.slug}/config/privacy/"
    assert web.get(url).status_code == 200
    unconfirmed = web.post(url, {"email": JO})
    assert unconfirmed.status_code == 200 and Customer.objects.filter(email=JO).exists()
    response = web.post(url, {"email": JO, "confirm": "on"}, follow=True)
    assert response.status_code == 200
    assert "Erased 1 identities" in response.content.decode()
    assert JO not in response.content.decode()
    assert rows_naming(JO) == []


@pytest.mark.slow
def test_forget_contact_with_dotdigital_deletes_the_contact_there_and_cancels_its_writes(engine):
    engine.post(
        "erp",
        [
            event(  # noqa: F405
                ("erp", "main"),
                "customer.upserted",
                "customer:7",
                "c-7",
                {
                    "customer_key": "erp:main:customer:7",
                    "first_name": "Jo",
                    "source_updated_at": "2026-05-01T10:00:00Z",
                },  # fmt: skip
                email=JO,
                customer_id="7",
            )
        ],
    )
    engine.pump()
    assert engine.contact(JO) is not None

    report = forget_contact(JO, engine.workspace, dotdigital=True)

    assert engine.contact(JO) is None
    assert report.dotdigital == ["DotDigital: contact deleted"]
    assert rows_naming(JO) == []
    Operation = apps.get_model("monitoring", "Operation")
    assert not Operation.objects.filter(state__in=("pending", "sending", "sent")).exists()
