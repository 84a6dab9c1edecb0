"""Whole-pipeline scenarios: Mango webhook -> stored event -> call engine -> outbox ->
live fake Bitrix24, asserting the exact REST calls in order (issue behaviours a-l)."""

import pytest

from telephony.models import Call, CallRecording
from tests.telephony.conftest import CLIENT_E164, LINE

pytestmark = pytest.mark.django_db

APPEARED, CONNECTED = "call__appeared_inbound", "call__connected"
DISCONNECTED, ANSWERED = "call__disconnected", "summary__inbound_answered"


def test_a_incoming_call_registers_with_line_pbx_time_and_unique_id(pbx):
    pbx.play("call__appeared_inbound_ivr", APPEARED, CONNECTED, DISCONNECTED, ANSWERED)
    assert pbx.methods() == ["register", "finish"]
    (_, register), (_, finish) = pbx.calls()
    prefix = pbx.connection.webhook_uuid.hex[:12]
    assert register == {
        "USER_ID": 11,
        "PHONE_NUMBER": CLIENT_E164,
        "TYPE": 2,
        "SHOW": 1,
        "CRM_CREATE": 1,
        "EXTERNAL_CALL_ID": f"{prefix}:E1",
        "LINE_NUMBER": LINE,
        "CALL_START_DATE": register["CALL_START_DATE"],
    }
    assert register["CALL_START_DATE"].endswith("+00:00")
    call = Call.objects.get()
    assert finish == {
        "CALL_ID": call.b24_call_id,
        "USER_ID": 11,
        "DURATION": 60,
        "STATUS_CODE": "200",
    }
    assert call.phase == "finished" and call.client_number_e164 == CLIENT_E164


def test_a_connection_options_reach_register(pbx):
    pbx.connection.show_card = pbx.connection.crm_create = False
    pbx.connection.save()
    pbx.play(APPEARED)
    ((_, register),) = pbx.calls()
    assert (register["SHOW"], register["CRM_CREATE"]) == (0, 0)


def test_b_ring_group_shows_all_then_hides_the_others(pbx):
    pbx.play("call__appeared_ring_group_a", "call__appeared_ring_group_b")
    pbx.play(CONNECTED, call_id="group-b", to__extension="102", seq=2)
    pbx.play(ANSWERED, to__extension="102")
    assert [(m, p.get("USER_ID")) for m, p in pbx.calls()] == [
        ("register", 11),
        ("show", [12]),
        ("hide", [11]),
        ("finish", 12),
    ]


def test_b_sequential_queue_hides_the_previous_and_shows_the_next(pbx):
    pbx.play(APPEARED, call_id="leg-a")
    pbx.play(DISCONNECTED, call_id="leg-a", seq=2)
    pbx.play(APPEARED, call_id="leg-b", to__extension="102")
    assert [(m, p.get("USER_ID")) for m, p in pbx.calls()] == [
        ("register", 11),
        ("hide", [11]),
        ("show", [12]),
    ]


def test_c_pickup_finishes_for_who_answered(pbx):
    pbx.play(APPEARED, "call__connected_pickup", "call__disconnected_picked_up")
    pbx.play(ANSWERED, to__extension="103")
    assert [(m, p.get("USER_ID")) for m, p in pbx.calls()] == [
        ("register", 11),
        ("hide", [11]),
        ("show", [13]),
        ("finish", 13),
    ]


@pytest.mark.parametrize(
    "transfer",
    ["call__connected_after_blind_transfer", "call__connected_after_consultative_transfer"],
)
def test_d_transfer_moves_the_card_and_finishes_for_the_final_user(pbx, transfer):
    pbx.play(APPEARED, CONNECTED, transfer)
    pbx.play(ANSWERED, to__extension="102")
    assert [(m, p.get("USER_ID")) for m, p in pbx.calls()] == [
        ("register", 11),
        ("hide", [11]),
        ("show", [12]),
        ("finish", 12),
    ]


def test_e_missed_call_is_304_for_the_default_user(pbx):
    pbx.play(APPEARED, "call__disconnected", "summary__inbound_missed")
    assert [(m, p.get("USER_ID"), p.get("STATUS_CODE")) for m, p in pbx.calls()] == [
        ("register", 11, None),
        ("hide", [11], None),
        ("finish", 1, "304"),
    ]


def test_e_busy_maps_through_the_disconnect_reason_table(pbx):
    pbx.play(APPEARED, "summary__inbound_busy")
    assert pbx.calls()[-1][1]["STATUS_CODE"] == "486"


def test_e_answered_but_shorter_than_the_minimum_is_missed(pbx):
    pbx.connection.missed_call_min_duration_s = 120
    pbx.connection.save()
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    assert pbx.calls()[-1][1] | {"CALL_ID": "x"} == {
        "CALL_ID": "x",
        "USER_ID": 11,
        "DURATION": 60,
        "STATUS_CODE": "304",
    }


def test_f_outgoing_desk_phone_call(pbx):
    pbx.play("call__appeared_outbound", "call__connected_outbound", "summary__outbound_answered")
    (_, register), (_, finish) = pbx.calls()
    assert (register["TYPE"], register["USER_ID"]) == (1, 11)
    assert finish["STATUS_CODE"] == "200" and finish["USER_ID"] == 11


def test_g_end_before_any_ringing_is_a_complete_silent_record(pbx):
    pbx.play(ANSWERED)
    (_, register), (_, finish) = pbx.calls()
    assert register["SHOW"] == 0 and register["USER_ID"] == 11
    assert finish["STATUS_CODE"] == "200"


def test_g_a_call_processed_long_after_it_happened_pops_no_card(pbx):
    for name in (APPEARED, "call__appeared_ring_group_b", CONNECTED):
        assert pbx.deliver(name, live=False).status_code == 200
    pbx.settle()  # Bitrix24 or the worker was down: everything is processed at once, late
    assert [(m, p.get("SHOW")) for m, p in pbx.calls()] == [("register", 0)]


def test_g_events_after_the_summary_change_nothing(pbx):
    pbx.play(APPEARED, ANSWERED)
    before = pbx.calls()
    pbx.play("call__appeared_ring_group_b", CONNECTED, seq=9)
    assert pbx.calls() == before


def test_g_reordered_events_of_a_leg_are_ordered_by_seq(pbx):
    pbx.play(APPEARED, CONNECTED)
    pbx.play(APPEARED, seq=1)  # a late copy of the ringing state: must not re-show
    assert pbx.methods() == ["register"]


def test_h_recording_is_downloaded_and_attached_after_finish(pbx):
    pbx.mango.recordings["rec-1"] = b"ID3" + b"\x00" * 1000
    pbx.play(APPEARED, CONNECTED)
    pbx.play("record_added", recording_id="rec-1")  # before the summary: waits for finish
    pbx.play(ANSWERED)
    assert pbx.methods() == ["register", "finish", "attachRecord"]
    attach = pbx.calls()[-1][1]
    assert attach["FILENAME"] == "rec-1.mp3"
    call = Call.objects.get()
    assert pbx.remote.records[call.b24_call_id][0]["content"] == b"ID3" + b"\x00" * 1000
    assert "files" not in str(attach)  # never the one-time provider link
    recording = CallRecording.objects.get()
    assert recording.state == "attached" and recording.content is None


def test_h_large_recordings_use_upload_mode_and_several_per_call(pbx, monkeypatch):
    from telephony import pipeline

    monkeypatch.setattr(pipeline, "INLINE_RECORDING_BYTES", 100)
    pbx.mango.recordings.update({"rec-1": b"A" * 500, "rec-2": b"B" * 50})
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    pbx.play("record_added", recording_id="rec-1")
    pbx.play("record_added", recording_id="rec-2")
    call = Call.objects.get()
    attaches = [p for m, p in pbx.calls() if m == "attachRecord"]
    assert ["FILE_CONTENT" in p for p in attaches] == [False, True]  # large: upload URL mode
    contents = sorted(r["content"] for r in pbx.remote.records[call.b24_call_id])
    assert contents == [b"A" * 500, b"B" * 50]
    assert set(CallRecording.objects.values_list("state", flat=True)) == {"attached"}


def test_h_a_recording_not_yet_available_is_retried(pbx):
    pbx.mango.recordings["rec-1"] = b"ID3data"
    pbx.mango.unavailable_until_attempt["rec-1"] = 2  # the first download answers 404
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    pbx.play("record_added", recording_id="rec-1")
    assert pbx.mango.recording_requests["rec-1"] == 2
    recording = CallRecording.objects.get()
    assert (recording.state, recording.attempts) == ("attached", 1)
    assert pbx.methods()[-1] == "attachRecord"


def test_i_route_to_responsible_shows_the_crm_owner(pbx):
    pbx.connection.route_to_responsible = True
    pbx.connection.save()
    pbx.remote.crm_entities[79161234567] = {
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": 5,
        "ASSIGNED_BY_ID": 77,
    }
    pbx.play(APPEARED)
    assert [(m, p.get("USER_ID")) for m, p in pbx.calls()] == [
        ("searchCrmEntities", None),
        ("register", 77),
        ("show", [11, 77]),
    ]


def test_l_internal_calls_are_not_logged_unless_enabled(pbx):
    pbx.play("call__appeared_internal", "summary__internal", entry="I1")
    assert pbx.calls() == []
    pbx.connection.log_internal_calls = True
    pbx.connection.save()
    pbx.play("call__appeared_internal", "summary__internal", entry="I2")
    assert pbx.methods() == ["register", "finish"]


def test_l_only_mapped_lines(pbx):
    pbx.connection.only_mapped_lines = True
    pbx.connection.save()
    pbx.play(
        APPEARED, ANSWERED, entry="other", to__line_number="78120000000", line_number="78120000000"
    )
    assert pbx.calls() == []
    pbx.play(APPEARED, ANSWERED, entry="mapped")
    assert pbx.methods() == ["register", "finish"]


def test_calls_during_needs_reauth_are_kept_and_sent_after_revival(pbx):
    from bitrixapp import inbox, outbox
    from bitrixapp.models import Portal
    from telephony.models import PbxEvent

    Portal.objects.filter(pk=pbx.portal.pk).update(status=Portal.Status.NEEDS_REAUTH)
    for name in (APPEARED, ANSWERED):
        assert pbx.deliver(name).status_code == 200
    for event_id in PbxEvent.objects.values_list("id", flat=True):
        inbox.process(PbxEvent, event_id)
    outbox.dispatch(pbx.portal.pk, slice_s=2)
    assert pbx.calls() == []  # nothing can go out, nothing is dropped
    Portal.objects.filter(pk=pbx.portal.pk).update(status=Portal.Status.ACTIVE)
    pbx.settle()
    assert pbx.methods() == ["register", "finish"]


def test_several_pbx_connections_per_portal_each_with_its_own_mappings(pbx):
    from telephony.models import PbxConnection, PbxExtension
    from tests.telephony.conftest import API_KEY, API_SALT

    pbx.remote.add_user(21, NAME="SPb", UF_PHONE_INNER="201")
    spb = PbxConnection.objects.create(
        portal=pbx.portal,
        name="St Petersburg",
        provider="mango",
        api_url=pbx.mango.api_url,
        credentials={"api_key": API_KEY, "api_salt": API_SALT},
        default_user_id=1,
    )
    PbxExtension.objects.create(connection=spb, extension="101", user_id=21)
    assert spb.webhook_url != pbx.connection.webhook_url
    pbx.play(APPEARED, entry="moscow")
    moscow_connection, pbx.connection = pbx.connection, spb
    pbx.play(APPEARED, entry="spb")
    users = [p["USER_ID"] for m, p in pbx.calls() if m == "register"]
    assert users == [11, 21]  # the same extension, a different person on each PBX
    assert {c.connection_id for c in Call.objects.all()} == {moscow_connection.pk, spb.pk}
