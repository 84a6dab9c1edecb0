"""The PBX webhook endpoint: every answer it gives, and duplicates."""

import threading
import uuid

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from telephony.models import PbxEvent
from tests.fakes.mango import fixture, signed_body
from tests.telephony.conftest import API_KEY, API_SALT

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


def body(name="call__appeared_inbound", key=API_KEY, salt=API_SALT):
    return signed_body(key, salt, fixture(name)["json"])


def test_unknown_connection_is_404(pbx, client):
    response = client.post(
        f"/telephony/hooks/{uuid.uuid4()}/events/call", body(), content_type=FORM
    )
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_inactive_connection_is_404(pbx):
    pbx.connection.is_active = False
    pbx.connection.save()
    assert pbx.post("events/call", body()).status_code == 404


def test_wrong_salt_is_403_with_a_hint_and_recorded_on_the_connection(pbx):
    response = pbx.post("events/call", body(salt="wrong"))
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_signature"
    assert "api_salt" in response.json()["detail"]
    pbx.connection.refresh_from_db()
    assert "api_salt" in pbx.connection.last_error
    assert not PbxEvent.objects.exists()


def test_api_key_of_another_connection_is_403_naming_the_likely_mix_up(pbx):
    response = pbx.post("events/call", body(key="other-key"))
    assert response.status_code == 403
    assert "another connection" in response.json()["detail"]


def test_missing_sign_is_400_naming_the_field(pbx):
    response = pbx.post("events/call", b"vpbx_api_key=mango-key&json=%7B%7D")
    assert response.status_code == 400
    assert response.json()["field"] == "sign"


def test_malformed_json_is_400_naming_the_field(pbx):
    response = pbx.post("events/call", signed_body(API_KEY, API_SALT, "[1, 2"))
    assert response.status_code == 400
    assert response.json()["field"] == "json"


def test_missing_entry_id_is_400_naming_it(pbx):
    payload = dict(fixture("call__appeared_inbound")["json"])
    del payload["entry_id"]
    response = pbx.post("events/call", signed_body(API_KEY, API_SALT, payload))
    assert response.status_code == 400
    assert "entry_id" in response.json()["field"]


def test_oversized_body_is_413(pbx, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 100
    assert pbx.post("events/call", body()).status_code == 413


def test_stored_body_keeps_no_credentials(pbx):
    assert pbx.post("events/call", body()).status_code == 200
    stored = PbxEvent.objects.get().body
    assert API_KEY not in stored and "vpbx_api_key=***" in stored


def test_unsupported_event_is_200_stored_and_ignored(pbx):
    response = pbx.post("events/dtmf", signed_body(API_KEY, API_SALT, fixture("dtmf")["json"]))
    assert response.status_code == 200
    pbx.settle()
    assert PbxEvent.objects.get().state == "ignored"
    assert pbx.calls() == []


def test_duplicate_delivery_is_200_with_no_second_effect(pbx):
    first = pbx.post("events/call", body())
    second = pbx.post("events/call", body())
    assert first.json()["status"] == "accepted" and second.json()["status"] == "duplicate"
    pbx.settle()
    assert PbxEvent.objects.count() == 1 and pbx.methods() == ["register"]


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_duplicate_deliveries_makes_one_bitrix24_call(pbx):
    from django.test import Client

    raw = body()
    statuses = []

    def deliver():
        try:
            statuses.append(
                Client()
                .post(
                    f"/telephony/hooks/{pbx.connection.webhook_uuid}/events/call",
                    raw,
                    content_type=FORM,
                )
                .json()["status"]
            )
        finally:
            db_connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 7
    pbx.settle()
    assert pbx.methods() == ["register"]


def test_the_ack_decrypts_only_the_connection_credentials(pbx, monkeypatch):
    """The cheap ack: one lookup (the portal's tokens are not loaded: each would be a Fernet
    decrypt), one insert, and nothing else."""
    from bitrixapp import crypto

    decrypted = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: decrypted.append(1) or real(token))
    with CaptureQueriesContext(db_connection) as queries:
        assert pbx.post("events/call", body()).status_code == 200
    assert len(decrypted) == 1  # the connection's credentials, which the signature check needs
    # lookup; SAVEPOINT, INSERT, RELEASE (inbox.store)
    assert len(queries) == 4, [q["sql"][:80] for q in queries]
    # The webhook UUID is unique: no ORDER BY to compile (or sort) for the lookup.
    assert "ORDER BY" not in queries[0]["sql"], queries[0]["sql"]
