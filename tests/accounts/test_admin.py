from __future__ import annotations

from tests.factories import make_user


def test_the_django_admin_is_for_superusers_only(client, db):
    staff = make_user("staff", is_staff=True)
    client.force_login(staff)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]

    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    assert client.get("/admin/").status_code == 200


def test_the_admin_never_shows_connection_credentials(client, db):
    from tests.factories import make_connection, make_workspace

    conn = make_connection(make_workspace(), credentials={"password": "hunter2"})
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    html = client.get(f"/admin/connectors/connection/{conn.pk}/change/").content.decode()
    assert "hunter2" not in html and "credentials" not in html.lower()
