"""MTT calls through the whole pipeline: webhook view -> stored event -> engine -> outbox ->
live fake Bitrix24, asserting the exact REST calls; recordings from a live FakeMtt."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest

from telephony.models import Call, CallRecording, PbxConnection, PbxEvent, PbxExtension, PbxLine
from tests.fakes.mtt import FIXTURE_EPOCH, FakeMtt, fixture, shift_times
from tests.telephony.conftest import CLIENT_E164, LINE, Pbx

pytestmark = pytest.mark.django_db

SECRET = "mtt-secret"
SECOND_NUMBER, SECOND_LINE = "78127654321", "78127654321-spb"


@pytest.fixture(scope="session")
def mtt_server() -> Iterator[FakeMtt]:
    with FakeMtt() as server:
        yield server


@pytest.fixture
def mtt(client, fake, mango, make_portal, mtt_server) -> Pbx:
    mtt_server.reset()
    portal, remote = make_portal()
    for user_id, ext in ((11, "101"), (12, "102")):
        remote.add_user(user_id, NAME=f"User {user_id}", UF_PHONE_INNER=ext)
    connection = PbxConnection.objects.create(
        portal=portal,
        name="MTT",
        provider="mtt",
        api_url=mtt_server.api_url,
        credentials={"api_key": mtt_server.api_key, "secret": SECRET},
        default_user_id=1,
        missed_call_min_duration_s=3,
    )
    for ext, user in (("101", 11), ("102", 12)):
        PbxExtension.objects.create(connection=connection, extension=ext, user_id=user)
    PbxLine.objects.create(connection=connection, number=LINE, line_number=LINE, name="Sales")
    pbx = Pbx(client, fake, mango, portal, remote, connection, FIXTURE_EPOCH)
    pbx.shift = time.time() - FIXTURE_EPOCH - 10
    pbx.mtt = mtt_server
    return pbx


def play(pbx: Pbx, *names: str, **patch: Any) -> None:
    for name in names:
        assert deliver(pbx, name, **patch).status_code == 200
        pbx.settle()


def deliver(pbx: Pbx, name: str, **patch: Any):
    payload = shift_times(copy.deepcopy(fixture(name)["json"]), pbx.shift)
    return pbx.send("", {**payload, **patch})


def summary(pbx: Pbx) -> list[tuple[str, Any, Any]]:
    return [(m, p.get("USER_ID"), p.get("STATUS_CODE") or p.get("SHOW")) for m, p in pbx.calls()]


def test_answered_call(mtt):
    play(mtt, "incoming_call", "answer_call", "end_call__not_recorded")
    assert summary(mtt) == [("register", 11, 1), ("finish", 11, "200")]
    register, finish = (p for _, p in mtt.calls())
    assert (register["PHONE_NUMBER"], register["LINE_NUMBER"], register["TYPE"]) == (
        CLIENT_E164,
        LINE,
        2,
    )
    assert finish["DURATION"] == 42


def test_group_call_answered_by_another_operator(mtt):
    play(mtt, "incoming_call__group", "answer_call__group_other_operator")
    play(mtt, "end_call__group_other_operator", recorded=False)
    # The group's number is not an employee: the default user's card, then the operator's.
    assert summary(mtt) == [
        ("register", 1, 1),
        ("hide", [1], None),
        ("show", [12], None),
        ("finish", 12, "200"),
    ]
    assert Call.objects.get().answered_user_id == 12


def test_a_call_shorter_than_the_minimum_is_missed(mtt):
    play(mtt, "incoming_call", "answer_call", "end_call__short")
    assert summary(mtt)[-1] == ("finish", 11, "304")


def test_miss_call_is_304_for_the_default_user(mtt):
    play(mtt, "incoming_call", "miss_call")
    assert summary(mtt) == [("register", 11, 1), ("hide", [11], None), ("finish", 1, "304")]


def test_duplicate_notifications_are_no_ops(mtt):
    play(mtt, "incoming_call", "answer_call")
    assert deliver(mtt, "answer_call").json() == {"status": "duplicate"}
    play(mtt, "end_call__not_recorded", "end_call__not_recorded", "incoming_call")
    assert mtt.methods() == ["register", "finish"]
    assert PbxEvent.objects.count() == 3


def test_end_without_start_registers_silently_and_finishes(mtt):
    play(mtt, "end_call__not_recorded")
    assert summary(mtt) == [("register", 11, 0), ("finish", 11, "200")]


def test_two_mtt_numbers_go_to_two_lines_and_unmapped_ones_to_the_default_line(mtt):
    PbxLine.objects.create(connection=mtt.connection, number=SECOND_NUMBER, line_number=SECOND_LINE)
    mtt.connection.default_line_number = "main"
    mtt.connection.save()
    play(mtt, "incoming_call")
    play(mtt, "incoming_call__second_number", call_id="second")
    play(mtt, "incoming_call", call_id="third", to_number="74990000000")
    lines = [p["LINE_NUMBER"] for m, p in mtt.calls() if m == "register"]
    assert lines == [LINE, SECOND_LINE, "main"]


def test_recording_is_fetched_and_attached_after_finish(mtt):
    mtt.mtt.recordings["mtt-5f1c2a"] = [b"RIFF" + b"\x00" * 100]
    mtt.mtt.ready_after["mtt-5f1c2a"] = 2  # the first request: not ready yet
    play(mtt, "incoming_call", "answer_call", "end_call")
    assert mtt.methods() == ["register", "finish", "attachRecord"]
    assert mtt.calls()[-1][1]["FILENAME"] == "mtt-5f1c2a.wav"
    call = Call.objects.get()
    assert mtt.remote.records[call.b24_call_id][0]["content"] == b"RIFF" + b"\x00" * 100
    assert mtt.mtt.record_requests["mtt-5f1c2a"] == 2
    assert CallRecording.objects.get().state == "attached"


def test_a_wrong_signature_is_403_and_nothing_is_stored(mtt):
    mtt.connection.credentials = {"api_key": "k", "secret": "another"}
    response = deliver(mtt, "incoming_call")
    assert response.status_code == 403 and response.json()["error"] == "invalid_signature"
    assert not PbxEvent.objects.exists()


def test_a_new_mtt_connection_from_a_config_file_counts_short_calls_as_missed(mtt):
    from telephony import config as pbx_config
    from telephony.config import PbxSpec

    spec = PbxSpec(name="MTT 2", provider="mtt", credentials={"api_key": "k"})
    pbx_config.apply(mtt.portal, [spec], "pbx")
    assert PbxConnection.objects.get(name="MTT 2").missed_call_min_duration_s == 3
