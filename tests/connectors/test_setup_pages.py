from __future__ import annotations

import pytest
from django.test import Client

from connectors.models import Connection


@pytest.mark.parametrize("kind", Connection.Kind.values)
def test_every_connector_kind_has_a_setup_page(world, kind):
    client = Client()
    client.force_login(world.member)
    response = client.get(f"/w/acme/config/connectors/{kind}/setup/")
    assert response.status_code == 200
    assert Connection.Kind(kind).label.encode() in response.content


def test_an_unknown_connector_kind_is_a_404(world):
    client = Client()
    client.force_login(world.member)
    assert client.get("/w/acme/config/connectors/sap/setup/").status_code == 404
