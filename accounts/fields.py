"""A model field that keeps a JSON value (credentials) encrypted at rest with Fernet.

Keys come from settings.FIELD_ENCRYPTION_KEYS, newest first: the first encrypts, any of them
decrypts (MultiFernet), so keys rotate without downtime (`manage.py rotate_encryption_keys`).
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A stored credential cannot be decrypted with FIELD_ENCRYPTION_KEYS: "
            "was a key removed before `manage.py rotate_encryption_keys` ran?"
        ) from None


def rotate(token: str) -> str:
    """The same plaintext re-encrypted under the newest key."""
    return fernet().rotate(token.encode()).decode()


class Secrets(dict[str, Any]):
    """A dict of credentials whose repr never shows the values (safe in logs and tracebacks)."""

    def __repr__(self) -> str:
        return f"<Secrets: {', '.join(sorted(self)) or 'empty'} (values hidden)>"

    __str__ = __repr__


if TYPE_CHECKING:
    _FieldBase = models.Field[dict[str, Any], Secrets]
else:
    _FieldBase = models.Field


class EncryptedJSONField(_FieldBase):
    description = "A JSON object, encrypted at rest"

    def get_internal_type(self) -> str:
        return "TextField"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Secrets | None:
        if value is None:
            return None
        return Secrets(json.loads(decrypt(value)))

    def to_python(self, value: Any) -> Any:
        if value is None or isinstance(value, Secrets):
            return value
        if isinstance(value, dict):
            return Secrets(value)
        return Secrets(json.loads(decrypt(value)))

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return encrypt(json.dumps(dict(value), sort_keys=True))

    def value_to_string(self, obj: models.Model) -> str:
        # Serialisation (dumpdata) gets the ciphertext, never the plaintext.
        return self.get_prep_value(self.value_from_object(obj)) or ""
