"""Encryption at rest for secrets (OAuth tokens, provider credentials).

`FIELD_ENCRYPTION_KEYS` is a comma-separated list, newest first: values are encrypted with the
first key and decrypted with any of them (cryptography's MultiFernet), so a key is rotated by
prepending a new one and running `manage.py rotate_encryption_keys`. A key may be a Fernet key
or any passphrase (stretched with SHA-256). Settings always provide at least one: from the
environment, or in embedded mode from a key file generated on first run.
"""

import base64
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


@cache
def _keyring(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet(k) for k in keys])


def keyring() -> MultiFernet:
    return _keyring(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return keyring().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return keyring().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError(
            "cannot decrypt a stored secret: FIELD_ENCRYPTION_KEYS lacks its key"
        ) from exc


def rotate(token: str) -> str:
    """Re-encrypt with the newest key."""
    return keyring().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column holding a Fernet token; Python sees the plaintext ('' stays '')."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> str | None:
        if value is None or value == "":
            return value
        return encrypt(str(value))


class EncryptedJSONField(EncryptedTextField):
    """A dict of secrets (provider credentials) stored as one encrypted JSON document."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> dict:
        plaintext = super().from_db_value(value, expression, connection)
        return json.loads(plaintext) if plaintext else {}

    def to_python(self, value: Any) -> dict:
        if isinstance(value, dict):
            return value
        return json.loads(value) if value else {}

    def get_prep_value(self, value: Any) -> str | None:
        return super().get_prep_value(json.dumps(value or {}, sort_keys=True))
