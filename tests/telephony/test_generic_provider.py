"""The generic JSON provider: the signature (timestamp window, rotation), per-field
validation through its serializer, every fixture (tests/fixtures/generic), and whole calls
through the real pipeline to the live fake Bitrix24."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from telephony.models import Call, CallRecording, PbxConnection, PbxEvent, PbxExtension, PbxLine
from telephony.providers import generic as generic_module
from telephony.providers.base import Direction, Kind, Webhook, WebhookRejected
from telephony.providers.generic import GenericJson, signature
from tests.fakes.generic import (
    FIXTURE_EPOCH,
    FakePbxFiles,
    fixture,
    fixture_names,
    shift_times,
    sign,
)
from tests.telephony.conftest import CLIENT_E164, LINE, Pbx

SECRET, OLD_SECRET = "generic-secret", "old-secret"
generic = GenericJson()


def connection(secret: str = SECRET, previous: str = "") -> SimpleNamespace:
    credentials = {"secret": secret, **({"previous_secret": previous} if previous else {})}
    return SimpleNamespace(credentials=credentials, api_url="")


def hook(body: bytes, headers: dict | None = None) -> Webhook:
    return Webhook("", body, "application/json", headers=headers or {})


def rejected(call, *args) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        call(*args)
    return caught.value


# Signature -----------------------------------------------------------------------------------


def test_a_known_signature_value():
    # Computed outside this code: printf '1718600000.{}' | openssl dgst -sha256 -hmac k
    assert signature("k", "1718600000", b"{}") == (
        "sha256=70796ec60e06e3d316682fb398302851f980d435784a5587c1e53190f315bfba"
    )


def test_a_signed_body_is_accepted_and_a_changed_byte_is_not():
    body = b'{"call_id": "1", "event": "ringing"}'
    headers = sign(SECRET, body)
    generic.verify(connection(), hook(body, headers))
    error = rejected(generic.verify, connection(), hook(body.replace(b"1", b"2"), headers))
    assert (error.status, error.field) == (403, "X-Signature")


def test_during_rotation_the_previous_secret_is_accepted_too():
    body = b"{}"
    generic.verify(connection(SECRET, OLD_SECRET), hook(body, sign(OLD_SECRET, body)))
    generic.verify(connection(SECRET, OLD_SECRET), hook(body, sign(SECRET, body)))
    assert rejected(generic.verify, connection(SECRET), hook(body, sign(OLD_SECRET, body)))


@pytest.mark.parametrize("age", [-301, 301, 3600])
def test_requests_outside_the_five_minute_window_are_refused(age):
    body = b"{}"
    error = rejected(
        generic.verify, connection(), hook(body, sign(SECRET, body, int(time.time()) - age))
    )
    assert (error.status, error.field) == (403, "X-Timestamp") and "replay" in error.detail


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({}, 403, "X-Timestamp"),
        ({"X-Timestamp": "yesterday"}, 400, "X-Timestamp"),
        ({"X-Timestamp": "NOW"}, 403, "X-Signature"),
    ],
)
def test_missing_or_malformed_signature_headers(headers, status, field):
    if headers.get("X-Timestamp") == "NOW":
        headers = {"X-Timestamp": str(int(time.time()))}
    error = rejected(generic.verify, connection(), hook(b"{}", headers))
    assert (error.status, error.field) == (status, field)


# Parsing -------------------------------------------------------------------------------------

EXPECTED = {
    "answered": [(Kind.ANSWERED, "101")],
    "answered__group_other": [(Kind.ANSWERED, "102")],
    "batch": [(Kind.RINGING, "101"), (Kind.ANSWERED, "101"), (Kind.SUMMARY, "101")],
    "ended": [(Kind.SUMMARY, "101")],
    "ended__bitrix_code": [(Kind.SUMMARY, "101")],
    "ended__busy": [(Kind.SUMMARY, "101")],
    "ended__iso_timestamp": [(Kind.SUMMARY, "101")],
    "ended__no_answer": [(Kind.SUMMARY, "101")],
    "ended__with_recording": [(Kind.SUMMARY, "101"), (Kind.RECORDING_READY, "")],
    "recording": [(Kind.RECORDING_READY, "")],
    "ringing": [(Kind.RINGING, "101")],
    "ringing__group": [(Kind.RINGING, "101"), (Kind.RINGING, "102")],
    "ringing__outbound": [(Kind.RINGING, "101")],
    "transferred": [(Kind.TRANSFERRED, "103")],
}


def parsed(name: str) -> list:
    return generic.parse(hook(json.dumps(fixture(name)["json"]).encode()))


def test_every_fixture_has_an_expectation():
    assert sorted(EXPECTED) == fixture_names()


@pytest.mark.parametrize("name", fixture_names())
def test_every_fixture_parses(name):
    events = parsed(name)
    assert [(e.kind, e.extension) for e in events] == EXPECTED[name]
    assert {e.call_key for e in events} == {"1718600000.42"}


@pytest.mark.parametrize(
    ("name", "status", "answered", "talk"),
    [
        ("ended", "200", True, 42),
        ("ended__iso_timestamp", "200", True, 42),
        ("ended__busy", "486", False, 0),
        ("ended__no_answer", "304", False, 0),
        ("ended__bitrix_code", "603", False, 0),
    ],
)
def test_ended_statuses(name, status, answered, talk):
    event = parsed(name)[0]
    assert (event.status_code, event.answered, event.talk_seconds) == (status, answered, talk)


def test_iso_and_epoch_timestamps_are_the_same_instant():
    assert parsed("ended__iso_timestamp")[0].at == parsed("ended")[0].at == FIXTURE_EPOCH + 47


def test_outbound_and_transfer():
    assert parsed("ringing__outbound")[0].direction is Direction.OUTBOUND
    assert parsed("transferred")[0].transfer == "blind"


def body_with(**fields: Any) -> bytes:
    event = {"call_id": "c1", "event": "ended", **fields}
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        (b"nope", "body", "JSON object"),
        (b"[]", "body", "1 to 100"),
        (b"7", "body", "JSON object"),
        (body_with(call_id=None), "call_id", "required"),
        (body_with(event="hangup"), "event", "ringing, answered"),
        (body_with(direction="sideways"), "direction", "in or out"),
        (body_with(duration="long"), "duration", "whole number of seconds"),
        (body_with(duration=-5), "duration", "whole number of seconds"),
        (body_with(timestamp="yesterday"), "timestamp", "ISO-8601"),
        (body_with(timestamp="2024-06-17T10:00:00"), "timestamp", "UTC offset"),
        (body_with(status="on fire"), "status", "busy"),
        (body_with(extension={"a": 1}), "extension", "list of texts"),
        (body_with(event="recording"), "recording_url", "required"),
        (body_with(recording_url="ftp://pbx/x.wav"), "recording_url", "http"),
        (body_with(seq=-1), "seq", "whole number"),
        (body_with(client_number="1" * 65), "client_number", "64"),
    ],
)
def test_validation_errors_name_the_field_and_the_expected_form(body, field, expected):
    error = rejected(generic.parse, hook(body))
    assert (error.status, error.field) == (400, field)
    assert expected in error.detail


def test_one_bad_event_in_an_array_refuses_the_whole_request_naming_its_index():
    events = [json.loads(body_with()), json.loads(body_with(duration="x"))]
    error = rejected(generic.parse, hook(json.dumps(events).encode()))
    assert error.field == "[1].duration"


def test_the_dedupe_key_ignores_the_timestamp_header():
    body = json.dumps(fixture("ringing")["json"]).encode()
    assert generic.dedupe_key(hook(body, sign(SECRET, body, 1))) == generic.dedupe_key(
        hook(body, sign(SECRET, body, 2))
    )


# Whole calls through the pipeline --------------------------------------------------------------


@pytest.fixture(scope="session")
def files_server() -> Iterator[FakePbxFiles]:
    with FakePbxFiles() as server:
        yield server


@pytest.fixture
def pbx_generic(client, fake, mango, make_portal, files_server) -> Pbx:
    files_server.reset()
    portal, remote = make_portal()
    for user_id, ext in ((11, "101"), (12, "102"), (13, "103")):
        remote.add_user(user_id, NAME=f"User {user_id}", UF_PHONE_INNER=ext)
    connection = PbxConnection.objects.create(
        portal=portal,
        name="Asterisk",
        provider="generic",
        credentials={"secret": SECRET},
        default_user_id=1,
    )
    for ext, user in (("101", 11), ("102", 12), ("103", 13)):
        PbxExtension.objects.create(connection=connection, extension=ext, user_id=user)
    PbxLine.objects.create(connection=connection, number=LINE, line_number=LINE, name="Sales")
    pbx = Pbx(client, fake, mango, portal, remote, connection)
    pbx.shift = time.time() - FIXTURE_EPOCH - 10
    pbx.files = files_server
    return pbx


def play(pbx: Pbx, *names: str, **patch: Any) -> None:
    for name in names:
        payload = shift_times(copy.deepcopy(fixture(name)["json"]), pbx.shift)
        if isinstance(payload, dict):
            payload.update(patch)
        assert pbx.send("", payload).status_code == 200
        pbx.settle()


def brief(pbx: Pbx) -> list[tuple[str, Any, Any]]:
    return [(m, p.get("USER_ID"), p.get("STATUS_CODE") or p.get("SHOW")) for m, p in pbx.calls()]


@pytest.mark.django_db
def test_answered_call(pbx_generic):
    play(pbx_generic, "ringing", "answered", "ended")
    assert brief(pbx_generic) == [("register", 11, 1), ("finish", 11, "200")]
    register, finish = (p for _, p in pbx_generic.calls())
    assert (register["PHONE_NUMBER"], register["LINE_NUMBER"]) == (CLIENT_E164, LINE)
    assert finish["DURATION"] == 42


@pytest.mark.django_db
def test_ring_group_answered_by_another_then_transferred(pbx_generic):
    play(pbx_generic, "ringing__group", "answered__group_other", "transferred")
    play(pbx_generic, "ended", extension="103")
    assert brief(pbx_generic) == [
        ("register", 11, 1),
        ("show", [12], None),
        ("hide", [11], None),
        ("hide", [12], None),
        ("show", [13], None),
        ("finish", 13, "200"),
    ]


@pytest.mark.django_db
def test_a_batch_in_one_request(pbx_generic):
    play(pbx_generic, "batch")
    assert pbx_generic.methods() == ["register", "finish"]


@pytest.mark.django_db
def test_busy_is_486_for_the_default_user(pbx_generic):
    play(pbx_generic, "ringing", "ended__busy")
    assert brief(pbx_generic) == [("register", 11, 1), ("hide", [11], None), ("finish", 1, "486")]


@pytest.mark.django_db
def test_an_outbound_call_is_registered_as_outgoing(pbx_generic):
    play(pbx_generic, "ringing__outbound", "answered", "ended", direction="out")
    assert brief(pbx_generic) == [("register", 11, 1), ("finish", 11, "200")]
    assert pbx_generic.calls()[0][1]["TYPE"] == 1


@pytest.mark.django_db
def test_recording_is_downloaded_and_attached(pbx_generic):
    pbx_generic.files.files["rec/1.wav"] = b"RIFFgeneric"
    pbx_generic.files.ready_after["rec/1.wav"] = 2
    play(pbx_generic, "ringing", "answered", "ended")
    play(pbx_generic, "recording", recording_url=pbx_generic.files.url("rec/1.wav"))
    assert pbx_generic.methods() == ["register", "finish", "attachRecord"]
    assert pbx_generic.calls()[-1][1]["FILENAME"] == "1.wav"
    assert CallRecording.objects.get().state == "attached"


@pytest.mark.django_db
def test_a_recording_over_the_size_cap_fails_for_good_without_being_kept(pbx_generic, monkeypatch):
    monkeypatch.setattr(generic_module, "RECORDING_MAX_BYTES", 3 * 1024 * 1024)
    pbx_generic.files.files["rec/huge.wav"] = b"R" * (4 * 1024 * 1024)
    play(pbx_generic, "ringing", "answered", "ended")
    play(pbx_generic, "recording", recording_url=pbx_generic.files.url("rec/huge.wav"))
    recording = CallRecording.objects.get()
    assert recording.state == "failed" and "larger than 3 MB" in recording.error
    assert pbx_generic.methods() == ["register", "finish"]
    assert pbx_generic.files.gets["rec/huge.wav"] == 1  # refused for good: never fetched again


@pytest.mark.django_db
def test_a_recording_url_on_a_private_address_is_refused_for_good_without_a_request(
    pbx_generic, settings
):
    """Server-side request forgery: a signed webhook must not make the worker fetch from the
    network it runs in (bitrixapp.public_http); the fake's files are on 127.0.0.1."""
    settings.PROVIDERS_ALLOW_PRIVATE_HOSTS = False
    pbx_generic.files.files["rec/1.wav"] = b"RIFFgeneric"
    play(pbx_generic, "ringing", "answered", "ended")
    play(pbx_generic, "recording", recording_url=pbx_generic.files.url("rec/1.wav"))
    recording = CallRecording.objects.get()
    assert recording.state == "failed"
    assert "private or local address" in recording.error and "127.0.0.1" in recording.error
    assert pbx_generic.files.gets.get("rec/1.wav", 0) == 0
    assert pbx_generic.methods() == ["register", "finish"]


@pytest.mark.django_db
def test_signature_failures_and_replays_store_nothing(pbx_generic):
    body = json.dumps(fixture("ringing")["json"]).encode()
    url = f"/telephony/hooks/{pbx_generic.connection.webhook_uuid}/"
    post = pbx_generic.client.post
    unsigned = post(url, body, content_type="application/json")
    wrong = post(url, body, content_type="application/json", headers=sign("wrong", body))
    old = sign(SECRET, body, int(time.time()) - 600)
    replayed = post(url, body, content_type="application/json", headers=old)
    assert [r.status_code for r in (unsigned, wrong, replayed)] == [403, 403, 403]
    assert replayed.json()["field"] == "X-Timestamp"
    assert not PbxEvent.objects.exists()
    pbx_generic.connection.refresh_from_db()
    assert "X-Timestamp" in pbx_generic.connection.last_error


@pytest.mark.django_db
def test_the_same_events_sent_again_within_the_window_are_a_duplicate(pbx_generic):
    play(pbx_generic, "ringing")
    payload = shift_times(copy.deepcopy(fixture("ringing")["json"]), pbx_generic.shift)
    assert pbx_generic.send("", payload).json() == {"status": "duplicate"}


@pytest.mark.django_db
def test_a_signed_invalid_body_is_400_kept_as_rejected_and_nothing_applied(pbx_generic):
    events = [fixture("ringing")["json"], {**fixture("ended")["json"], "duration": "x"}]
    response = pbx_generic.send("", events)
    assert response.status_code == 400
    assert response.json()["field"] == "[1].duration"
    row = PbxEvent.objects.get()
    assert row.state == PbxEvent.State.REJECTED and not Call.objects.exists()
    pbx_generic.settle()
    assert pbx_generic.calls() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[" * 900 + b"]" * 900, "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"),
        (b'{"call_id": {"\\ud800": 1}, "event": "ringing"}', "body"),
    ],
    ids=["nested 900 deep", "a key with a lone surrogate"],
)
def test_signed_hostile_json_is_a_400_and_kept_as_rejected(pbx_generic, body, field):
    url = f"/telephony/hooks/{pbx_generic.connection.webhook_uuid}/"
    headers = sign(SECRET, body)
    response = pbx_generic.client.post(url, body, content_type="application/json", headers=headers)
    assert (response.status_code, response.json()["field"]) == (400, field)
    assert PbxEvent.objects.get().state == PbxEvent.State.REJECTED
