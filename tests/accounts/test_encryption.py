from __future__ import annotations

import io

from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection as db

from accounts.fields import Secrets, decrypt
from connectors.models import Connection
from tests.factories import make_connection, make_workspace


def raw_credentials(conn: Connection) -> str:
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT credentials FROM {Connection._meta.db_table} WHERE id = %s", [conn.pk]
        )
        return cursor.fetchone()[0]


def test_credentials_round_trip_and_are_ciphertext_at_rest(db):
    conn = make_connection(make_workspace(), credentials={"api_user": "u@x", "password": "hunter2"})
    stored = raw_credentials(conn)
    assert "hunter2" not in stored and "api_user" not in stored
    conn.refresh_from_db()
    assert conn.credentials == {"api_user": "u@x", "password": "hunter2"}


def test_credentials_never_show_in_repr():
    secrets = Secrets({"password": "hunter2"})
    assert "hunter2" not in repr(secrets) and "hunter2" not in str(secrets)
    assert "password" in repr(secrets)


def test_old_key_still_decrypts_after_a_new_key_is_put_in_front(db, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    conn = make_connection(make_workspace(), credentials={"password": "hunter2"})
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    conn.refresh_from_db()
    assert conn.credentials["password"] == "hunter2"


def test_rotation_re_encrypts_under_the_new_key_so_the_old_one_can_go(db, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    conn = make_connection(make_workspace(), credentials={"password": "hunter2"})
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert decrypt(raw_credentials(conn)) == '{"password": "hunter2"}'
    conn.refresh_from_db()
    assert conn.credentials == {"password": "hunter2"}
