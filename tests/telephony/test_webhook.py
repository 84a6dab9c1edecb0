"""The PBX webhook endpoint: every answer it gives, and duplicates."""

import threading
import uuid

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from bitrixapp.models import Portal
from telephony.models import PbxConnection, PbxEvent
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
    decrypt), one insert, and nothing else but, the first time a web process sees the URL,
    the read of what it remembers (bitrixapp.webhooks)."""
    from bitrixapp import crypto

    decrypted = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: decrypted.append(1) or real(token))
    with CaptureQueriesContext(db_connection) as queries:
        assert pbx.post("events/call", body()).status_code == 200
    # The connection's credentials, which the signature check needs: as looked up, then as
    # stored, to remember them only if they did not change in between.
    assert len(decrypted) == 2
    # lookup; stored values; SAVEPOINT, INSERT, RELEASE (inbox.store)
    assert len(queries) == 5, [q["sql"][:80] for q in queries]
    # The webhook UUID is unique: no ORDER BY to compile (or sort) for the lookup.
    assert "ORDER BY" not in queries[0]["sql"], queries[0]["sql"]


def test_a_remembered_connection_costs_the_ack_one_insert(pbx, monkeypatch):
    from bitrixapp import crypto

    assert pbx.post("events/call", body()).status_code == 200
    decrypted = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: decrypted.append(1) or real(token))
    with CaptureQueriesContext(db_connection) as queries:
        response = pbx.post("events/call", body("call__connected"))
    assert response.json()["status"] == "accepted"
    assert not decrypted
    # SAVEPOINT, INSERT (guarded: the connection unchanged), RELEASE
    assert len(queries) == 3, [q["sql"][:80] for q in queries]
    assert "WHERE EXISTS" in queries[1]["sql"]


# A remembered connection never accepts what a fresh look-up would refuse: every change is
# seen by the very next webhook. `update()` changes the row behind the app's back (no
# signal, no save), as another web process or an admin action would.


def test_a_connection_deactivated_after_it_was_remembered_refuses_the_next_webhook(pbx):
    assert pbx.post("events/call", body()).status_code == 200
    PbxConnection.objects.filter(pk=pbx.connection.pk).update(is_active=False)
    assert pbx.post("events/call", body("call__connected")).status_code == 404
    assert PbxEvent.objects.count() == 1


def test_a_deleted_connection_refuses_the_next_webhook(pbx):
    assert pbx.post("events/call", body()).status_code == 200
    PbxConnection.objects.filter(pk=pbx.connection.pk).delete()
    assert pbx.post("events/call", body("call__connected")).status_code == 404


def test_an_uninstalled_portal_refuses_the_next_webhook(pbx):
    assert pbx.post("events/call", body()).status_code == 200
    Portal.objects.filter(pk=pbx.portal.pk).update(status=Portal.Status.UNINSTALLED)
    assert pbx.post("events/call", body("call__connected")).status_code == 410
    assert PbxEvent.objects.count() == 1


def test_new_credentials_take_effect_with_the_next_webhook(pbx):
    assert pbx.post("events/call", body()).status_code == 200
    pbx.connection.credentials = {"api_key": API_KEY, "api_salt": "new-salt"}
    pbx.connection.save()
    # Signed with the new salt: accepted, though the process remembered the old one.
    response = pbx.post("events/call", body("call__connected", salt="new-salt"))
    assert response.json()["status"] == "accepted"
    assert PbxConnection.objects.get(pk=pbx.connection.pk).last_error == ""
    # Signed with the old salt: refused and recorded, though it was valid a moment ago.
    response = pbx.post("events/call", body("call__disconnected"))
    assert response.status_code == 403
    assert "api_salt" in PbxConnection.objects.get(pk=pbx.connection.pk).last_error


def test_the_old_credentials_are_refused_at_once(pbx):
    """The process remembered the connection and its old key: a webhook signed with that key
    passes the check in memory, and is refused all the same (the INSERT sees the change)."""
    assert pbx.post("events/call", body()).status_code == 200
    pbx.connection.credentials = {"api_key": API_KEY, "api_salt": "new-salt"}
    pbx.connection.save()
    assert pbx.post("events/call", body("call__connected")).status_code == 403
    assert PbxEvent.objects.count() == 1


def test_a_refusal_recorded_elsewhere_is_cleared_by_the_next_good_webhook(pbx):
    """Another process refused a forged webhook while this one remembered the connection:
    the next genuine webhook here still sees the refusal and closes it."""
    from telephony import alerts

    assert pbx.post("events/call", body()).status_code == 200
    alerts.webhook_refused(PbxConnection.objects.get(pk=pbx.connection.pk), "sign does not match")
    assert pbx.post("events/call", body("call__connected")).json()["status"] == "accepted"
    assert PbxConnection.objects.get(pk=pbx.connection.pk).last_error == ""
    assert PbxEvent.objects.count() == 2


def test_a_deactivated_connection_answers_404_before_any_other_check(pbx):
    """A remembered connection answers nothing of its own but a plain acceptance: once it is
    deactivated, a malformed request or a bad path gets the 404 a fresh look-up gives."""
    assert pbx.post("events/call", body()).status_code == 200
    PbxConnection.objects.filter(pk=pbx.connection.pk).update(is_active=False)
    assert pbx.post("events/call", b"vpbx_api_key=mango-key&json=%7B%7D").status_code == 404
    assert pbx.post("x" * 200, body("call__connected")).status_code == 404


def test_a_new_webhook_url_retires_the_old_one_at_once(pbx):
    assert pbx.post("events/call", body()).status_code == 200
    PbxConnection.objects.filter(pk=pbx.connection.pk).update(webhook_uuid=uuid.uuid4())
    assert pbx.post("events/call", body("call__connected")).status_code == 404


def test_the_old_key_never_closes_a_recorded_refusal(pbx):
    """The process remembered the connection while a refusal was recorded on it; the admin
    then changed the key. A webhook signed with the old key passes the check in memory: it
    must not close the refusal (and tell the admins it is fixed) before being refused."""
    from bitrixapp.models import Problem
    from bitrixapp.webhooks import forget_receiver

    assert pbx.post("events/call", body(salt="wrong")).status_code == 403
    forget_receiver(PbxConnection, pbx.connection.webhook_uuid)
    # Looked up and remembered with the refusal recorded, then refused the same way again.
    assert pbx.post("events/call", body(salt="wrong")).status_code == 403
    pbx.connection.refresh_from_db()
    pbx.connection.credentials = {"api_key": API_KEY, "api_salt": "new-salt"}
    pbx.connection.save()
    assert pbx.post("events/call", body("call__connected")).status_code == 403
    problems = Problem.objects.filter(kind="webhook_bad_signature")
    assert [p.is_open for p in problems] == [True]
    assert not PbxEvent.objects.exists()
