"""The Mango Office provider: signatures over byte-exact bodies, parsing of every documented
event variant (tests/fixtures/mango), and its outbound client against a live FakeMango."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
import requests

from telephony.providers import get
from telephony.providers.base import Kind, ProviderError, Webhook, WebhookRejected
from telephony.providers.mango import Mango, sign, signed_form
from tests.fakes.mango import FakeMango, fixture, fixture_names, signed_body

KEY = "1234567890qwerty"
SALT = "s4lt0f7h1sPBX"
T0 = 1718600000  # the fixtures' clock
mango = Mango()


def connection(api_url: str = "", key: str = KEY, salt: str = SALT) -> SimpleNamespace:
    return SimpleNamespace(credentials={"api_key": key, "api_salt": salt}, api_url=api_url)


def hook(raw: bytes, path: str = "events/call") -> Webhook:
    """What the webhook view hands the provider."""
    return Webhook(path=path, body=raw, content_type="application/x-www-form-urlencoded")


def fixture_hook(name: str) -> Webhook:
    data = fixture(name)
    return hook(signed_body(KEY, SALT, data["json"]), data["path"])


def rejection(connection_: SimpleNamespace, webhook: Webhook) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        mango.verify(connection_, webhook)
    return caught.value


# Signatures ---------------------------------------------------------------------------------

# Byte-exact bodies as Mango posts them; the signs were computed once, outside this code, as
# sha256_hex("1234567890qwerty" + json + "s4lt0f7h1sPBX").
RAW_ASCII = (
    b"vpbx_api_key=1234567890qwerty"
    b"&sign=4ed9111530baa5efc0cd62679768a9f2364f1025874b72ae5089c5df84465334"
    b"&json=%7B%22entry_id%22%3A%22MjUyMDQ2NjI0Mzo0MDY%3D%22%2C%22call_id%22%3A%22MToxMDAwMjo0"
    b"MDY%3D%22%2C%22timestamp%22%3A1718600000%2C%22seq%22%3A1%2C%22call_state%22%3A%22Appeare"
    b"d%22%2C%22location%22%3A%22abonent%22%2C%22from%22%3A%7B%22number%22%3A%2279161234567%22"
    b"%7D%2C%22to%22%3A%7B%22extension%22%3A%22101%22%2C%22number%22%3A%22sip%3Auser101%40acme"
    b".mangosip.ru%22%2C%22line_number%22%3A%2274951234567%22%7D%7D"
)
SIGN_ASCII = "4ed9111530baa5efc0cd62679768a9f2364f1025874b72ae5089c5df84465334"

# A Cyrillic (IDN) SIP address, sent as raw UTF-8 in the json text, percent-encoded in the form.
RAW_CYRILLIC = (
    b"vpbx_api_key=1234567890qwerty"
    b"&sign=18e0b44706a7f593afeb05d6e81f4682cebaaa8058315bab6407b507609570d0"
    b"&json=%7B%22entry_id%22%3A%22MjUyMDQ2NjI0Mzo0MDc%3D%22%2C%22call_id%22%3A%22MToxMDAwMjo0"
    b"MDc%3D%22%2C%22timestamp%22%3A1718600100%2C%22seq%22%3A1%2C%22call_state%22%3A%22Appeare"
    b"d%22%2C%22from%22%3A%7B%22number%22%3A%2279161234567%22%7D%2C%22to%22%3A%7B%22extension%"
    b"22%3A%22102%22%2C%22number%22%3A%22sip%3A%D0%BF%D1%80%D0%BE%D0%B4%D0%B0%D0%B6%D0%B8%40%D"
    b"0%BE%D1%84%D0%B8%D1%81.%D1%80%D1%84%22%7D%7D"
)
SIGN_CYRILLIC = "18e0b44706a7f593afeb05d6e81f4682cebaaa8058315bab6407b507609570d0"


def test_sign_helper_matches_the_precomputed_literal() -> None:
    form = hook(RAW_ASCII).form
    assert form["sign"] == SIGN_ASCII
    assert sign(KEY, form["json"], SALT) == SIGN_ASCII


def test_literal_body_is_accepted_and_parsed() -> None:
    webhook = hook(RAW_ASCII)
    mango.verify(connection(), webhook)  # no exception
    [event] = mango.parse(webhook)
    assert (event.kind, event.call_key, event.leg) == (
        Kind.RINGING,
        "MjUyMDQ2NjI0Mzo0MDY=",
        "MToxMDAwMjo0MDY=",
    )
    assert (event.extension, event.client_number, event.line_number) == (
        "101",
        "79161234567",
        "74951234567",
    )


def test_cyrillic_body_is_signed_over_the_exact_utf8_json_text() -> None:
    webhook = hook(RAW_CYRILLIC)
    assert "sip:продажи@офис.рф" in webhook.form["json"]
    assert sign(KEY, webhook.form["json"], SALT) == SIGN_CYRILLIC
    mango.verify(connection(), webhook)
    [event] = mango.parse(webhook)
    assert (event.kind, event.extension, event.at) == (Kind.RINGING, "102", 1718600100.0)


@pytest.mark.parametrize(
    "reserialize",
    [
        pytest.param(lambda p: json.dumps(p, ensure_ascii=True, separators=(",", ":")), id="ascii"),
        pytest.param(lambda p: json.dumps(p, ensure_ascii=False), id="spaces"),
    ],
)
def test_sign_is_over_the_text_not_the_data(reserialize) -> None:
    """The same data written differently (\\u escapes, spaces) no longer matches the sign."""
    form = hook(RAW_CYRILLIC).form
    text = reserialize(json.loads(form["json"]))
    assert json.loads(text) == json.loads(form["json"]) and text != form["json"]
    error = rejection(connection(), hook(urlencode({**form, "json": text}).encode()))
    assert (error.status, error.field) == (403, "sign")


def test_wrong_api_key_is_403_with_a_hint() -> None:
    error = rejection(connection(key="another-pbx-key"), hook(RAW_ASCII))
    assert (error.status, error.field) == (403, "vpbx_api_key")
    assert error.detail == (
        "vpbx_api_key does not match this connection's api_key: "
        "is this the webhook URL of another connection?"
    )


def test_wrong_salt_is_403_naming_the_formula() -> None:
    error = rejection(connection(salt="not-the-salt"), hook(RAW_ASCII))
    assert (error.status, error.field) == (403, "sign")
    assert error.detail == (
        "sign does not match: check api_salt of this connection "
        "(Mango signs sha256(api_key + json + api_salt))"
    )


def test_tampered_json_is_403() -> None:
    raw = RAW_ASCII.replace(b"79161234567", b"79160000000")
    assert rejection(connection(), hook(raw)).status == 403


def test_non_ascii_api_key_is_403_not_a_crash() -> None:
    raw = signed_body("ключ", SALT, {"entry_id": "x"})
    assert rejection(connection(), hook(raw)).status == 403


def test_uppercase_hex_sign_is_accepted() -> None:
    raw = RAW_ASCII.replace(SIGN_ASCII.encode(), SIGN_ASCII.upper().encode())
    mango.verify(connection(), hook(raw))


@pytest.mark.parametrize("missing", ["vpbx_api_key", "sign", "json"])
@pytest.mark.parametrize("how", ["absent", "blank"])
def test_missing_form_field_is_400_naming_it(missing: str, how: str) -> None:
    form = hook(RAW_ASCII).form
    if how == "absent":
        del form[missing]
    else:
        form[missing] = ""
    error = rejection(connection(), hook(urlencode(form).encode()))
    assert (error.status, error.field, error.detail) == (400, missing, f"{missing} is required")


def test_raw_body_is_parsed_as_a_form_even_without_the_form_content_type() -> None:
    webhook = Webhook("events/call", RAW_ASCII, "")
    mango.verify(connection(), webhook)
    assert mango.parse(webhook)[0].kind is Kind.RINGING


def test_connection_without_credentials_rejects_everything() -> None:
    empty = SimpleNamespace(credentials={}, api_url="")
    assert rejection(empty, hook(RAW_ASCII)).status == 403


def test_registry_serves_this_provider() -> None:
    provider = get("mango")
    assert isinstance(provider, Mango)
    assert (provider.name, provider.credential_keys, provider.sends_summary) == (
        "Mango Office",
        ("api_key", "api_salt"),
        True,
    )


# Parsing the fixtures ------------------------------------------------------------------------

CLIENT, LINE = "79161234567", "74951234567"
INBOUND = {"direction": "inbound", "client_number": CLIENT, "line_number": LINE}

# The normalized event of each fixture (CallEvent.to_json(), ids checked apart).
EXPECTED: dict[str, dict] = {
    "call__appeared_inbound_ivr": {
        **INBOUND, "kind": "ringing", "seq": 1, "at": T0, "raw_type": "events/call:Appeared",
    },
    "call__appeared_inbound": {
        **INBOUND, "kind": "ringing", "seq": 1, "at": T0 + 5, "extension": "101",
        "raw_type": "events/call:Appeared",
    },
    "call__appeared_ring_group_a": {
        **INBOUND, "kind": "ringing", "seq": 1, "at": T0 + 100, "extension": "101",
        "raw_type": "events/call:Appeared",
    },
    "call__appeared_ring_group_b": {
        **INBOUND, "kind": "ringing", "seq": 1, "at": T0 + 100, "extension": "102",
        "raw_type": "events/call:Appeared",
    },
    "call__connected": {
        **INBOUND, "kind": "answered", "seq": 2, "at": T0 + 10, "extension": "101",
        "raw_type": "events/call:Connected",
    },
    "call__connected_pickup": {
        **INBOUND, "kind": "answered", "seq": 1, "at": T0 + 306, "extension": "103",
        "raw_type": "events/call:Connected",
    },
    "call__connected_after_blind_transfer": {
        **INBOUND, "kind": "answered", "seq": 2, "at": T0 + 420, "extension": "102",
        "transfer": "blind", "raw_type": "events/call:Connected",
    },
    "call__connected_consultation": {
        "kind": "answered", "seq": 2, "at": T0 + 530,
        "direction": "internal", "client_number": "101",
        "extension": "102", "transfer": "consultative", "raw_type": "events/call:Connected",
    },
    "call__connected_after_consultative_transfer": {
        "kind": "answered", "seq": 3, "at": T0 + 545, "direction": "inbound",
        "client_number": CLIENT, "extension": "102", "transfer": "blind",
        "raw_type": "events/call:Connected",
    },
    "call__onhold": {
        **INBOUND, "kind": "held", "seq": 3, "at": T0 + 30, "extension": "101",
        "raw_type": "events/call:OnHold",
    },
    "call__disconnected": {
        **INBOUND, "kind": "ended", "seq": 4, "at": T0 + 70, "extension": "101",
        "status_code": "304", "reason": "1110", "raw_type": "events/call:Disconnected",
    },
    "call__disconnected_busy": {
        **INBOUND, "kind": "ended", "seq": 2, "at": T0 + 203, "extension": "101",
        "status_code": "486", "reason": "1121", "raw_type": "events/call:Disconnected",
    },
    "call__disconnected_picked_up": {
        **INBOUND, "kind": "ended", "seq": 2, "at": T0 + 306, "extension": "101",
        "status_code": "304", "reason": "1182", "raw_type": "events/call:Disconnected",
    },
    "call__appeared_outbound": {
        "kind": "ringing", "seq": 1, "at": T0 + 600, "direction": "outbound",
        "client_number": CLIENT, "extension": "101", "raw_type": "events/call:Appeared",
    },
    "call__connected_outbound": {
        "kind": "answered", "seq": 2, "at": T0 + 608, "direction": "outbound",
        "client_number": CLIENT, "extension": "101", "raw_type": "events/call:Connected",
    },
    "call__appeared_callback": {
        "kind": "ringing", "seq": 1, "at": T0 + 700, "direction": "outbound",
        "client_number": CLIENT, "extension": "101", "command_id": "b24-click-42",
        "raw_type": "events/call:Appeared",
    },
    "call__appeared_internal": {
        "kind": "ringing", "seq": 1, "at": T0 + 800,
        "direction": "internal", "client_number": "101",
        "extension": "102", "raw_type": "events/call:Appeared",
    },
    "summary__inbound_answered": {
        **INBOUND, "kind": "summary", "seq": 0, "at": T0 + 70, "extension": "101",
        "answered": True, "talk_seconds": 60, "started_at": T0, "status_code": "200",
        "reason": "1110", "raw_type": "events/summary",
    },
    "summary__inbound_missed": {
        # a group miss names the group's own number as the first of the chain
        **INBOUND, "kind": "summary", "seq": 0, "at": T0 + 125, "extension": "500",
        "answered": False, "talk_seconds": 0, "started_at": T0 + 95, "status_code": "304",
        "reason": "1110", "raw_type": "events/summary",
    },
    "summary__inbound_busy": {
        **INBOUND, "kind": "summary", "seq": 0, "at": T0 + 203, "extension": "101",
        "answered": False, "talk_seconds": 0, "started_at": T0 + 200, "status_code": "486",
        "reason": "1121", "raw_type": "events/summary",
    },
    "summary__ivr_only": {
        **INBOUND, "kind": "summary", "seq": 0, "at": T0 + 914, "answered": False,
        "talk_seconds": 0, "started_at": T0 + 900, "status_code": "304", "reason": "1170",
        "raw_type": "events/summary",
    },
    "summary__outbound_answered": {
        "kind": "summary", "seq": 0, "at": T0 + 653, "direction": "outbound",
        "client_number": CLIENT, "line_number": LINE, "extension": "101", "answered": True,
        "talk_seconds": 45, "started_at": T0 + 600, "status_code": "200", "reason": "1120",
        "raw_type": "events/summary",
    },
    "summary__internal": {
        "kind": "summary", "seq": 0, "at": T0 + 834,
        "direction": "internal", "client_number": "101",
        "extension": "102", "answered": True, "talk_seconds": 30, "started_at": T0 + 800,
        "status_code": "200", "reason": "1110", "raw_type": "events/summary",
    },
    "recording__completed": {
        "kind": "recording_ready", "seq": 2, "at": T0 + 70, "extension": "101",
        "reason": "1000", "raw_type": "events/recording:Completed",
    },
    "recording__too_short": {
        "kind": "unknown", "seq": 2, "at": T0 + 203, "extension": "101", "reason": "4002",
        "raw_type": "events/recording:Completed",
    },
    "record_added": {
        "kind": "recording_ready", "seq": 0, "at": T0 + 75, "raw_type": "events/record/added",
    },
    "dtmf": {"kind": "unknown", "seq": 0, "raw_type": "events/dtmf"},
}  # fmt: skip

ID_FIELDS = {"call_key": "entry_id", "leg": "call_id", "recording_id": "recording_id"}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == fixture_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_the_normalized_event(name: str) -> None:
    webhook = fixture_hook(name)
    mango.verify(connection(), webhook)
    [event] = mango.parse(webhook)
    actual = event.to_json()
    ids = {field: actual.pop(field) for field in ID_FIELDS if field in actual}
    assert actual == EXPECTED[name]
    payload = fixture(name)["json"]
    # events/summary and events/record/added have no leg; dtmf's leg is not used
    assert ids.get("call_key") == payload["entry_id"]
    for field in ("leg", "recording_id"):
        if field in ids:
            assert ids[field] == payload[ID_FIELDS[field]]


def test_fixture_scenarios_share_their_call_keys() -> None:
    def key(name: str) -> str:
        return mango.parse(fixture_hook(name))[0].call_key

    def legs(*names: str) -> set[str]:
        return {mango.parse(fixture_hook(name))[0].leg for name in names}

    inbound = [
        "call__appeared_inbound_ivr", "call__appeared_inbound", "call__connected",
        "call__onhold", "call__disconnected", "summary__inbound_answered",
        "recording__completed", "record_added",
    ]  # fmt: skip
    assert len({key(name) for name in inbound}) == 1
    assert key("call__appeared_ring_group_a") == key("call__appeared_ring_group_b")
    assert key("call__appeared_ring_group_a") == key("summary__inbound_missed")
    assert len(legs("call__appeared_ring_group_a", "call__appeared_ring_group_b")) == 2
    assert key("call__disconnected_picked_up") == key("call__connected_pickup")
    assert key("call__connected_consultation") == key("call__connected_after_consultative_transfer")
    assert key("call__appeared_outbound") == key("summary__outbound_answered")
    assert key("call__appeared_internal") == key("summary__internal")
    assert key("call__disconnected_busy") == key("summary__inbound_busy")
    completed, added = (
        mango.parse(fixture_hook(name))[0] for name in ("recording__completed", "record_added")
    )
    assert completed.recording_id == added.recording_id


def parse(payload: dict | str, path: str = "events/call") -> list:
    return mango.parse(hook(signed_body(KEY, SALT, payload), path))


def test_routed_inbound_call_with_command_id_stays_inbound() -> None:
    """commands/route puts a command_id on an inbound leg: only callback_initiator (sent on
    callbacks) makes a (from number → to employee) leg outbound."""
    payload = fixture("call__appeared_callback")["json"]
    del payload["callback_initiator"]
    [event] = parse(payload)
    assert (event.direction, event.command_id, event.extension) == (
        "inbound",
        "b24-click-42",
        "101",
    )


def test_unknown_call_state_is_unknown() -> None:
    payload = {**fixture("call__connected")["json"], "call_state": "Transferring"}
    [event] = parse(payload)
    assert (event.kind, event.raw_type) == (Kind.UNKNOWN, "events/call:Transferring")


def test_disconnect_reason_only_counts_on_disconnected() -> None:
    payload = {**fixture("call__connected")["json"], "disconnect_reason": 1121}
    [event] = parse(payload)
    assert (event.reason, event.status_code) == ("", "")


def test_summary_without_reason_is_missed() -> None:
    payload = fixture("summary__inbound_busy")["json"]
    del payload["disconnect_reason"]
    [event] = parse(payload, "events/summary")
    assert (event.answered, event.status_code, event.reason) == (False, "304", "")


def test_answered_summary_is_200_whatever_the_reason() -> None:
    payload = {**fixture("summary__inbound_answered")["json"], "disconnect_reason": 1121}
    [event] = parse(payload, "events/summary")
    assert (event.answered, event.status_code, event.reason) == (True, "200", "1121")


def test_summary_talk_time_decides_answered_not_entry_result() -> None:
    payload = {**fixture("summary__inbound_missed")["json"], "entry_result": 1}
    assert parse(payload, "events/summary")[0].answered is False
    payload = {**fixture("summary__inbound_answered")["json"], "entry_result": 0}
    assert parse(payload, "events/summary")[0].answered is True


def test_recording_progress_events_are_unknown() -> None:
    payload = fixture("recording__completed")["json"]
    for state in ("Started", "Continued"):
        del payload["completion_code"]
        payload = {**payload, "recording_state": state}
        [event] = parse(payload, "events/recording")
        assert (event.kind, event.raw_type) == (Kind.UNKNOWN, f"events/recording:{state}")
        payload["completion_code"] = 1000


def test_recording_completion_code_may_be_a_string() -> None:
    payload = {**fixture("recording__completed")["json"], "completion_code": "1000"}
    assert parse(payload, "events/recording")[0].kind is Kind.RECORDING_READY


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("events/call", "entry_id"),
        ("events/call", "call_id"),
        ("events/call", "call_state"),
        ("events/summary", "entry_id"),
        ("events/recording", "recording_id"),
        ("events/record/added", "recording_id"),
    ],
)
def test_missing_required_json_field_is_400_naming_it(path: str, field: str) -> None:
    name = {
        "events/call": "call__connected",
        "events/summary": "summary__inbound_answered",
        "events/recording": "recording__completed",
        "events/record/added": "record_added",
    }[path]
    payload = fixture(name)["json"]
    del payload[field]
    with pytest.raises(WebhookRejected) as caught:
        parse(payload, path)
    assert (caught.value.status, caught.value.field) == (400, f"json.{field}")
    assert caught.value.detail == f"json.{field} is required"


@pytest.mark.parametrize("text", ["[1, 2]", "not json", '"text"', "null"])
def test_json_that_is_not_an_object_is_400(text: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(text)
    assert (caught.value.status, caught.value.field) == (400, "json")
    assert caught.value.detail == "json is not a JSON object"


@pytest.mark.parametrize(
    "path", ["events/sms", "events/record/tagged", "result/callback", "events/unheard-of", ""]
)
def test_other_paths_are_unknown_and_keep_the_call_key(path: str) -> None:
    [event] = parse({"entry_id": "E-1", "command_id": "c-1", "result": 1000}, path)
    assert (event.kind, event.call_key, event.command_id, event.raw_type) == (
        Kind.UNKNOWN,
        "E-1",
        "c-1",
        path,
    )


def test_path_slashes_do_not_matter() -> None:
    webhook = fixture_hook("call__connected")
    webhook.path = "/events/call/"
    assert mango.parse(webhook)[0].kind is Kind.ANSWERED


# disconnect_reason → STATUS_CODE -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("1000", "304"),  # action done (1xxx)
        ("1100", "304"),  # normal end
        ("1110", "304"),  # caller hung up
        ("1111", "304"),  # no answer in time
        ("1120", "304"),  # called party hung up
        ("1121", "486"),  # busy
        ("1122", "603"),  # rejected
        ("1123", "480"),  # do not disturb
        ("1125", "603-S"),  # dialling task stopped
        ("1131", "480"),  # called number unavailable
        ("1133", "404"),  # number does not exist
        ("1141", "403"),  # region forbidden (by subclass 114x)
        ("1151", "423"),  # caller blacklisted
        ("1164", "480"),  # all operators unavailable
        ("1170", "304"),  # ended by the scheme (IVR)
        ("1182", "304"),  # picked up by another operator
        ("1192", "480"),  # outside the schedule
        ("1193", "486"),  # auto-reject while talking
        ("1199", "480"),  # unknown code of subclass 119x
        ("1312", "486"),  # answering machine: busy
        ("2110", "402"),  # account blocked
        ("2240", "402"),  # insufficient funds
        ("2300", "423"),  # direction blocked
        ("2999", "402"),  # unknown billing code: its class
        ("3200", "404"),  # wrong number
        ("3210", "404"),
        ("3100", "OTHER"),  # bad request
        ("4200", "480"),  # unreachable
        ("4501", "403"),  # call rate limit (security)
        ("4502", "423"),  # caller in the incoming blacklist
        ("5001", "503"),  # overload
        ("5003", "503"),  # technical problems
        ("5004", "503"),  # other server error
        ("9999", "OTHER"),  # no such class
        ("abc", "OTHER"),
        ("11", "OTHER"),
    ],
)
def test_disconnect_reason_table(reason: str, status: str) -> None:
    assert Mango.status_code(reason) == status


def test_status_table_only_uses_bitrix_codes() -> None:
    bitrix = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402"}
    assert set(Mango.DISCONNECT_STATUS.values()) <= bitrix | {"423", "OTHER"}


# dedupe_key ----------------------------------------------------------------------------------


def test_same_delivery_twice_gives_the_same_key() -> None:
    first, again = fixture_hook("call__connected"), fixture_hook("call__connected")
    assert mango.dedupe_key(first) == mango.dedupe_key(again)
    text = first.form["json"]
    assert mango.dedupe_key(first) == hashlib.sha256(f"events/call\n{text}".encode()).hexdigest()


def test_different_notifications_get_different_keys() -> None:
    keys = {
        mango.dedupe_key(fixture_hook("call__connected")),
        mango.dedupe_key(fixture_hook("call__onhold")),
        mango.dedupe_key(hook(fixture_hook("call__connected").body, "events/summary")),
    }
    assert len(keys) == 3


# Outbound: FakeMango -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeMango]:
    with FakeMango(api_key=KEY, api_salt=SALT) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeMango) -> FakeMango:
    fake_server.reset()
    return fake_server


def test_signed_form_is_what_mango_checks() -> None:
    form = signed_form(KEY, SALT, {"to_number": "79161234567", "note": "звонок"})
    assert form["json"] == '{"to_number":"79161234567","note":"звонок"}'
    assert form["sign"] == sign(KEY, form["json"], SALT)


def test_originate_posts_a_signed_callback(fake: FakeMango) -> None:
    mango.originate(connection(fake.api_url), "101", "79161234567", "b24-click-42")
    assert fake.callbacks == [
        {"command_id": "b24-click-42", "from": {"extension": "101"}, "to_number": "79161234567"}
    ]
    [request] = fake.requests
    assert (request.method, request.path, request.status) == (
        "POST",
        "/vpbx/commands/callback",
        200,
    )


def test_originate_passes_the_line(fake: FakeMango) -> None:
    mango.originate(connection(fake.api_url), "101", "79161234567", "c-2", line_number=LINE)
    assert fake.callbacks[0]["line_number"] == LINE


def test_originate_without_trailing_slash_in_api_url(fake: FakeMango) -> None:
    mango.originate(connection(fake.api_url.rstrip("/")), "101", "79161234567", "c-3")
    assert len(fake.callbacks) == 1


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (3100, "result 3100 (invalid command parameters)"),
        (2240, "result 2240 (insufficient funds on the Mango account)"),
        (2110, "result 2110 (the Mango account is unavailable (blocked, closed or frozen))"),
        (4001, "result 4001 (command not supported)"),
        (5003, "result 5003 (Mango server error)"),
    ],
)
def test_originate_refused_names_the_code(fake: FakeMango, result: int, words: str) -> None:
    fake.callback_result = result
    with pytest.raises(ProviderError) as caught:
        mango.originate(connection(fake.api_url), "101", "79161234567", "c-4")
    assert str(caught.value) == f"Mango refused the click-to-call (commands/callback): {words}"


def test_originate_with_a_wrong_salt_says_so_without_secrets(fake: FakeMango) -> None:
    wrong = connection(fake.api_url, salt="wrong-salt-value")
    with pytest.raises(ProviderError) as caught:
        mango.originate(wrong, "101", "79161234567", "c-5")
    message = str(caught.value)
    assert "result 3102" in message and "check api_salt" in message
    assert KEY not in message and "wrong-salt-value" not in message
    assert fake.callbacks == []


def test_originate_rate_limited(fake: FakeMango) -> None:
    fake.rate_limited = True
    with pytest.raises(ProviderError, match=r"^Mango rate limit exceeded \(HTTP 429\)"):
        mango.originate(connection(fake.api_url), "101", "79161234567", "c-6")
    assert [r.status for r in fake.requests] == [429]


@pytest.fixture
def dead_url() -> str:
    """A base URL where nothing listens (a port just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/vpbx/"


def test_originate_network_error(dead_url: str) -> None:
    with pytest.raises(ProviderError, match=r"unreachable: ConnectionError$"):
        mango.originate(connection(dead_url), "101", "79161234567", "c-7")


MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 4


def test_fetch_recording_follows_the_one_time_link(fake: FakeMango) -> None:
    fake.recordings["MToxMDAw/NjA4:1"] = MP3
    recording = mango.fetch_recording(connection(fake.api_url), "MToxMDAw/NjA4:1")
    assert (recording.filename, recording.content) == ("MToxMDAw_NjA4_1.mp3", MP3)
    post, download = fake.requests
    assert (post.path, post.status, post.payload) == (
        "/vpbx/queries/recording/post",
        302,
        {"recording_id": "MToxMDAw/NjA4:1", "action": "download"},
    )
    assert (download.method, download.status) == ("GET", 200)
    # the link is dead after its first use
    assert requests.get(fake.base_url + download.path, timeout=5).status_code == 404


def test_fetch_recording_not_yet_available_then_ready(fake: FakeMango) -> None:
    fake.recordings["rec-late"] = MP3
    fake.unavailable_until_attempt["rec-late"] = 3
    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            mango.fetch_recording(connection(fake.api_url), "rec-late")
        assert str(caught.value) == (
            "recording rec-late not available yet (HTTP 404, result 3320: recording not found)"
        )
    assert mango.fetch_recording(connection(fake.api_url), "rec-late").content == MP3
    assert fake.recording_requests["rec-late"] == 3


def test_fetch_unknown_recording(fake: FakeMango) -> None:
    with pytest.raises(ProviderError, match=r"^recording nope not available yet \(HTTP 404"):
        mango.fetch_recording(connection(fake.api_url), "nope")
    assert not any(r.path.startswith("/files/") for r in fake.requests)


def test_fetch_recording_rate_limited(fake: FakeMango) -> None:
    fake.recordings["rec-1"] = MP3
    fake.rate_limited = True
    with pytest.raises(ProviderError, match="rate limit"):
        mango.fetch_recording(connection(fake.api_url), "rec-1")


def test_fetch_recording_error_never_shows_the_link(fake: FakeMango, monkeypatch) -> None:
    """The file server failing after the redirect: the message names the HTTP status only."""
    fake.recordings["rec-2"] = MP3
    original = fake._serve_file

    def gone(token: str):
        original(token)  # consume the link, then answer as if it had expired
        return original(token)

    monkeypatch.setattr(fake, "_serve_file", gone)
    with pytest.raises(ProviderError) as caught:
        mango.fetch_recording(connection(fake.api_url), "rec-2")
    assert str(caught.value) == "recording rec-2 not available yet (HTTP 404)"
    assert "/files/" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"), [(7, 7), ("7", 7), (7.0, 7), (" 7 ", 7), (None, 0), ("", 0)]
)
def test_numbers_come_as_json_numbers_or_strings(value: object, expected: int) -> None:
    payload = fixture("call__connected")["json"]
    payload["seq"] = value
    [event] = parse(payload)
    assert event.seq == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", "abc"),
        ("seq", -1),
        ("seq", True),
        ("seq", {"n": 1}),
        ("seq", 2**31),
        ("seq", "1e400"),
        ("timestamp", 10**12),  # datetime cannot hold it
        ("timestamp", "1.5"),
    ],
)
def test_a_number_outside_its_bounds_is_400_naming_it(field: str, value: object) -> None:
    payload = fixture("call__connected")["json"]
    payload[field] = value
    with pytest.raises(WebhookRejected) as caught:
        parse(payload)
    assert (caught.value.status, caught.value.field) == (400, f"json.{field}")


def test_a_talk_longer_than_30_days_is_400() -> None:
    payload = fixture("summary__inbound_answered")["json"]
    payload["end_time"] = payload["talk_time"] + 30 * 24 * 3600
    [event] = parse(payload, "events/summary")
    assert event.talk_seconds == 30 * 24 * 3600
    payload["end_time"] += 1
    with pytest.raises(WebhookRejected) as caught:
        parse(payload, "events/summary")
    assert (caught.value.status, caught.value.field) == (400, "json.end_time")


@pytest.mark.parametrize(
    ("field", "value"),
    [("entry_id", "E" * 256), ("command_id", "c" * 65), ("to.line_number", "7" * 65)],
)
def test_text_longer_than_its_column_is_400_naming_it(field: str, value: str) -> None:
    payload = fixture("call__connected")["json"]
    side, _, name = field.rpartition(".")
    (payload[side] if side else payload)[name] = value
    with pytest.raises(WebhookRejected) as caught:
        parse(payload)
    assert (caught.value.status, caught.value.field) == (400, f"json.{field}")
    (payload[side] if side else payload)[name] = value[:-1]
    assert parse(payload)
