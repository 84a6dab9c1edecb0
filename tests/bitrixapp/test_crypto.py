import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from bitrixapp import crypto
from bitrixapp.models import Portal


def _raw_tokens(portal_id: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM bitrixapp_portal WHERE id = %s", [portal_id]
        )
        return cursor.fetchone()


@pytest.mark.django_db
def test_tokens_are_encrypted_in_the_database_and_readable_in_python():
    portal = Portal.objects.create(
        member_id="m1",
        domain="a.bitrix24.ru",
        client_endpoint="https://a.bitrix24.ru/rest/",
        access_token="access-plain",
        refresh_token="refresh-plain",
    )
    raw_access, raw_refresh = _raw_tokens(portal.pk)
    assert "access-plain" not in raw_access and "refresh-plain" not in raw_refresh
    fresh = Portal.objects.get(pk=portal.pk)
    assert (fresh.access_token, fresh.refresh_token) == ("access-plain", "refresh-plain")


@pytest.mark.django_db
def test_key_rotation_reencrypts_with_the_new_key(settings):
    old_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    portal = Portal.objects.create(
        member_id="m1",
        domain="a",
        client_endpoint="https://a/rest/",
        access_token="tok",
    )
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_encryption_keys")
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key is gone now
    assert Portal.objects.get(pk=portal.pk).access_token == "tok"


def test_a_missing_key_is_a_clear_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    token = crypto.encrypt("secret")
    settings.FIELD_ENCRYPTION_KEYS = ["another passphrase"]
    with pytest.raises(ValueError, match="FIELD_ENCRYPTION_KEYS"):
        crypto.decrypt(token)
