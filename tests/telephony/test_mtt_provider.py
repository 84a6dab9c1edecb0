"""The MTT provider: authentication (secret URL, HMAC header or token), parsing of every
fixture (tests/fixtures/mtt) with the field-name table, and recordings from a live FakeMtt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from telephony.providers.base import Direction, Kind, ProviderError, Webhook, WebhookRejected
from telephony.providers.mtt import Mtt, signature
from tests.fakes.mtt import FakeMtt, fixture, fixture_names, signed

SECRET = "mtt-shared-secret"
mtt = Mtt()


def connection(secret: str = "", api_url: str = "", api_key: str = "mtt-key") -> SimpleNamespace:
    credentials = {"api_key": api_key, **({"secret": secret} if secret else {})}
    return SimpleNamespace(credentials=credentials, api_url=api_url)


def hook(body: bytes, headers: dict | None = None, query: str = "") -> Webhook:
    return Webhook("", body, "application/json", query=query, headers=headers or {})


def parsed(name: str) -> list:
    return mtt.parse(hook(json.dumps(fixture(name)["json"]).encode()))


def rejected(call, *args) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        call(*args)
    return caught.value


# Authentication ------------------------------------------------------------------------------


def test_without_a_secret_the_url_alone_is_enough():
    mtt.verify(connection(), hook(b'{"type": "incoming_call"}'))


def test_a_body_signed_with_the_secret_is_accepted_byte_exact():
    body, headers = signed(SECRET, fixture("incoming_call")["json"])
    mtt.verify(connection(SECRET), hook(body, headers))
    mtt.verify(connection(SECRET), hook(body, {"X-Signature": "sha256=" + headers["X-Signature"]}))
    # The same event re-serialised with other spacing is another body: its signature differs.
    respaced = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert rejected(mtt.verify, connection(SECRET), hook(respaced, headers)).status == 403


def test_a_known_signature_value():
    # Computed outside this code: printf '{}' | openssl dgst -sha256 -hmac k
    assert signature("k", b"{}") == (
        "add853b103fbcc936a194f9eb15e29c4ff08af6e47d5d1bca4f20218e31e4fff"
    )


@pytest.mark.parametrize(
    ("headers", "query"),
    [({}, ""), ({"X-Signature": "0" * 64}, ""), ({}, "token=wrong")],
    ids=["unsigned", "wrong signature", "wrong token"],
)
def test_with_a_secret_unsigned_or_wrong_requests_are_403(headers, query):
    error = rejected(mtt.verify, connection(SECRET), hook(b"{}", headers, query))
    assert error.status == 403 and SECRET not in error.detail


def test_the_secret_as_a_token_parameter_is_accepted():
    mtt.verify(connection(SECRET), hook(b"{}", query=f"token={SECRET}"))


# Parsing -------------------------------------------------------------------------------------

EXPECTED = {
    "incoming_call": (Kind.RINGING, "101"),
    "incoming_call__group": (Kind.RINGING, "500"),
    "incoming_call__second_number": (Kind.RINGING, "101"),
    "incoming_call__no_extension": (Kind.RINGING, ""),
    "answer_call": (Kind.ANSWERED, "101"),
    "answer_call__group_other_operator": (Kind.ANSWERED, "102"),
    "end_call": (Kind.SUMMARY, "101"),
    "end_call__group_other_operator": (Kind.SUMMARY, "102"),
    "end_call__short": (Kind.SUMMARY, "101"),
    "end_call__not_recorded": (Kind.SUMMARY, "101"),
    "end_call__telecom_field_names": (Kind.SUMMARY, "101"),
    "miss_call": (Kind.SUMMARY, "101"),
    "other_event": (Kind.UNKNOWN, ""),
}


def test_every_fixture_has_an_expectation():
    assert sorted(EXPECTED) == fixture_names()


@pytest.mark.parametrize("name", fixture_names())
def test_every_fixture_parses(name):
    event = parsed(name)[0]
    assert (event.kind, event.extension) == EXPECTED[name]
    if event.kind is not Kind.UNKNOWN:
        assert event.call_key == "mtt-5f1c2a"
        assert event.client_number == "79161234567"
        assert event.direction is Direction.INBOUND
        assert event.at and event.at >= 1718600000


def test_end_call_is_the_final_record_with_the_talk_time_and_a_recording():
    summary, recording = parsed("end_call")
    assert (summary.answered, summary.talk_seconds, summary.status_code) == (True, 42, "200")
    assert (recording.kind, recording.recording_id) == (Kind.RECORDING_READY, "mtt-5f1c2a")


def test_miss_call_is_304_without_a_recording():
    (summary,) = parsed("miss_call")
    assert (summary.answered, summary.talk_seconds, summary.status_code) == (False, 0, "304")


def test_a_call_marked_not_recorded_fetches_nothing():
    assert [e.kind for e in parsed("end_call__not_recorded")] == [Kind.SUMMARY]


def test_field_aliases_from_the_telecom_api_read_the_same():
    (summary, _) = parsed("end_call__telecom_field_names")
    assert (summary.line_number, summary.talk_seconds) == ("74951234567", 42)


def test_an_outgoing_call_swaps_client_and_line():
    body = {**fixture("incoming_call")["json"], "direction": "out"}
    (event,) = mtt.parse(hook(json.dumps(body).encode()))
    assert (event.direction, event.client_number, event.line_number) == (
        Direction.OUTBOUND,
        "74951234567",
        "79161234567",
    )


def test_unknown_fields_are_harmless():
    body = {**fixture("answer_call")["json"], "vendor_extra": {"nested": [1, 2]}, "x": None}
    assert mtt.parse(hook(json.dumps(body).encode()))[0].kind is Kind.ANSWERED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1]", "body"),
        (b'{"type": "end_call"}', "call_id"),
        (b'{"type": "end_call", "call_id": "c", "duration": "long"}', "duration"),
        (b'{"type": "end_call", "call_id": "c", "duration": -1}', "duration"),
        (b'{"type": "end_call", "call_id": "c", "timestamp": 1e400}', "timestamp"),
        (b'{"type": "end_call", "call_id": {"a": 1}}', "call_id"),
        (b'{"type": "answer_call", "call_id": "c", "extension": ["1"]}', "extension"),
        (('{"type": "miss_call", "call_id": "' + "c" * 300 + '"}').encode(), "call_id"),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(body, field):
    error = rejected(mtt.parse, hook(body))
    assert (error.status, error.field) == (400, field)


def test_dedupe_key_is_stable_for_a_retry_and_differs_between_events():
    a, b = (json.dumps(fixture(n)["json"]).encode() for n in ("incoming_call", "answer_call"))
    assert mtt.dedupe_key(hook(a)) == mtt.dedupe_key(hook(a)) != mtt.dedupe_key(hook(b))
    assert len(mtt.dedupe_key(hook(a))) <= 64


def failure(call, *args) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(*args)
    return caught.value


# Recordings ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMtt]:
    with FakeMtt() as server:
        yield server


@pytest.fixture
def api(fake: FakeMtt) -> FakeMtt:
    fake.reset()
    return fake


def test_recording_with_a_bearer_key(api):
    api.recordings["c1"] = [b"RIFFdata"]
    recording = mtt.fetch_recording(connection(api_url=api.api_url), "c1")
    assert (recording.filename, recording.content) == ("c1.wav", b"RIFFdata")
    assert api.auth == ["Bearer mtt-key"]


def test_recording_with_the_telecom_api_urls_form_takes_the_first_file(api):
    api.recordings["h323-1"] = [b"RIFFpart1", b"RIFFpart2"]
    conn = connection(api_url=api.api_url, api_key="user:pw")
    recording = mtt.fetch_recording(conn, "h323-1")
    assert recording.content == b"RIFFpart1" and api.auth[0].startswith("Basic ")


def test_a_recording_not_ready_yet_is_a_temporary_error(api):
    error = failure(mtt.fetch_recording, connection(api_url=api.api_url), "x")
    assert not error.permanent and "not available yet" in str(error)


def test_a_wrong_key_is_a_permanent_error(api):
    api.recordings["c1"] = [b"RIFF"]
    conn = connection(api_url=api.api_url, api_key="wrong")
    error = failure(mtt.fetch_recording, conn, "c1")
    assert error.permanent and "api_key" in str(error)


def test_an_unreachable_api_is_temporary_and_names_no_url():
    conn = connection(api_url="http://127.0.0.1:9/")
    error = failure(mtt.fetch_recording, conn, "c1")
    assert not error.permanent and "127.0.0.1" not in str(error)


def test_click_to_call_is_refused_permanently_with_a_reason():
    error = failure(mtt.originate, connection(), "101", "+7916", "cmd")
    assert error.permanent and "MTT" in str(error)
