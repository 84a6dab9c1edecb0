"""The pure call engine: each behaviour of a call as intents, no database or network."""

import pytest

from telephony import engine
from telephony.engine import CallState, Finish, Hide, Policy, Register, Show
from telephony.providers.base import CallEvent, Direction, Kind

NOW = 1_800_000_000.0
IN = Direction.INBOUND
CLIENT = "79161234567"
LINE = "74951234567"

POLICY = Policy(
    external_id_prefix="c1",
    default_user=1,
    users={"101": 11, "102": 12, "103": 13},
    lines={LINE: "74951234567"},
)


def ev(kind, leg="", ext="", seq=0, at=NOW - 5, direction=IN, **kw):
    return CallEvent(
        kind=kind,
        call_key="E1",
        leg=leg,
        extension=ext,
        seq=seq,
        at=at,
        direction=direction,
        client_number=kw.pop("client", CLIENT),
        line_number=kw.pop("line", LINE),
        **kw,
    )


def run(events, policy=POLICY, state=None, now=NOW):
    state = state or CallState()
    intents = []
    for event in events:
        state, out = engine.apply(state, event, policy, now, call_key="E1")
        intents += out
    return state, intents


def summary(answered, talk=0, ext="", status="", **kw):
    return ev(
        Kind.SUMMARY,
        ext=ext,
        answered=answered,
        talk_seconds=talk,
        status_code=status,
        started_at=NOW - 60,
        **kw,
    )


def test_incoming_call_registers_for_the_first_ringing_user_with_pbx_time_and_line():
    state, out = run([ev(Kind.RINGING, leg="ivr"), ev(Kind.RINGING, leg="a", ext="101", seq=1)])
    (register,) = out
    assert register == Register(
        user_id=11,
        phone=CLIENT,
        call_type=2,
        line_number=LINE,
        start="2027-01-15T07:59:55+00:00",
        show=True,
        crm_create=True,
        external_call_id="c1:E1",
    )
    assert state.shown == [11]


def test_unmapped_extension_goes_to_the_default_user():
    state, out = run([ev(Kind.RINGING, leg="a", ext="555")])
    assert out[0].user_id == 1


def test_show_card_off_registers_silently_and_shows_nobody():
    policy = Policy(**{**POLICY.__dict__, "show_card": False, "crm_create": False})
    state, out = run(
        [ev(Kind.RINGING, leg="a", ext="101"), ev(Kind.RINGING, leg="b", ext="102")], policy
    )
    assert [type(i) for i in out] == [Register]
    assert out[0].show is False and out[0].crm_create is False


def test_ring_group_shows_everyone_then_hides_the_others_in_one_command():
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", seq=1),
            ev(Kind.RINGING, leg="b", ext="102", seq=1),
            ev(Kind.RINGING, leg="c", ext="103", seq=1),
            ev(Kind.ANSWERED, leg="b", ext="102", seq=2),
        ]
    )
    assert out[1:] == [Show((12,)), Show((13,)), Hide((11, 13))]


def test_sequential_queue_hides_the_previous_and_shows_the_next():
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", seq=1),
            ev(Kind.ENDED, leg="a", ext="101", seq=2),
            ev(Kind.RINGING, leg="b", ext="102", seq=1),
        ]
    )
    assert out[1:] == [Hide((11,)), Show((12,))]


def test_pickup_by_someone_else_finishes_for_who_answered():
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", seq=1),
            ev(Kind.ANSWERED, leg="p", ext="103", seq=1, at=NOW - 4),
            summary(True, talk=30, ext="103"),
        ]
    )
    assert out[1:] == [Hide((11,)), Show((13,)), Finish(13, 30, "200")]


@pytest.mark.parametrize("transfer", ["blind", "consultative"])
def test_transfer_moves_the_card_and_finishes_for_the_final_user(transfer):
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", seq=1),
            ev(Kind.ANSWERED, leg="a", ext="101", seq=2),
            ev(Kind.ANSWERED, leg="t", ext="102", seq=1, transfer=transfer),
            summary(True, talk=50, ext="102"),
        ]
    )
    assert out[1:] == [Hide((11,)), Show((12,)), Finish(12, 50, "200")]


def test_missed_call_finishes_304_for_the_default_user():
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", seq=1),
            ev(Kind.ENDED, leg="a", ext="101", seq=2),
            summary(False, ext="101"),
        ]
    )
    assert out[1:] == [Hide((11,)), Finish(1, 0, "304")]


def test_missed_without_default_user_goes_to_the_last_ringing_user():
    policy = Policy(**{**POLICY.__dict__, "default_user": None})
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101"),
            ev(Kind.RINGING, leg="b", ext="102"),
            summary(False),
        ],
        policy,
    )
    assert out[-1].user_id == 12


def test_short_answered_call_counts_as_missed():
    policy = Policy(**{**POLICY.__dict__, "min_talk_s": 5})
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101"),
            ev(Kind.ANSWERED, leg="a", ext="101"),
            summary(True, talk=3, ext="101"),
        ],
        policy,
    )
    assert out[-1] == Finish(11, 3, "304")


def test_provider_status_for_unanswered_calls_is_kept():
    state, out = run(
        [ev(Kind.RINGING, leg="a", ext="101"), summary(False, status="486", reason="1120")]
    )
    assert out[-1] == Finish(1, 0, "486", "1120")


def test_outgoing_desk_phone_call_is_type_1():
    events = [
        ev(Kind.RINGING, leg="o", ext="101", direction=Direction.OUTBOUND),
        ev(Kind.ANSWERED, leg="o", ext="101", direction=Direction.OUTBOUND),
        summary(True, talk=12, ext="101", direction=Direction.OUTBOUND),
    ]
    state, out = run(events)
    assert out[0].call_type == 1 and out[0].user_id == 11
    assert out[-1] == Finish(11, 12, "200")


def test_end_before_any_ringing_still_makes_a_complete_silent_record():
    state, out = run([summary(True, talk=20, ext="102")])
    register, finish = out
    assert register.show is False and register.user_id == 12
    assert finish == Finish(12, 20, "200")


def test_a_call_processed_late_gets_no_cards():
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", at=NOW - 3600),
            ev(Kind.RINGING, leg="b", ext="102", at=NOW - 3599),
            ev(Kind.ANSWERED, leg="b", ext="102", at=NOW - 3590),
        ]
    )
    assert [type(i) for i in out] == [Register] and out[0].show is False


def test_events_after_the_summary_change_nothing_but_recordings():
    state, out = run([ev(Kind.RINGING, leg="a", ext="101"), summary(False)])
    state, late = run(
        [
            ev(Kind.ANSWERED, leg="a", ext="101", seq=9),
            ev(Kind.RECORDING_READY, recording_id="r1"),
            ev(Kind.RECORDING_READY, recording_id="r1"),
        ],
        state=state,
    )
    assert late == [engine.FetchRecording("r1")]


def test_older_seq_of_a_leg_is_ignored():
    state, out = run(
        [
            ev(Kind.RINGING, leg="a", ext="101", seq=1),
            ev(Kind.ANSWERED, leg="a", ext="101", seq=3),
            ev(Kind.RINGING, leg="a", ext="101", seq=2),
        ]
    )
    assert state.legs["a"].status == "answered"
    assert len(out) == 1


def test_internal_calls_are_not_logged_unless_enabled():
    internal = [
        ev(Kind.RINGING, leg="i", ext="102", direction=Direction.INTERNAL, line=""),
        summary(True, talk=5, ext="102", direction=Direction.INTERNAL, line=""),
    ]
    state, out = run(internal)
    assert out == [] and state.ignored == "internal call"
    state, out = run(internal, Policy(**{**POLICY.__dict__, "log_internal": True}))
    assert [type(i) for i in out] == [Register, Finish]


def test_only_mapped_lines_ignores_other_lines():
    policy = Policy(**{**POLICY.__dict__, "only_mapped_lines": True})
    state, out = run(
        [ev(Kind.RINGING, leg="a", ext="101", line="78120000000"), summary(False)], policy
    )
    assert out == [] and state.ignored == "line not mapped"
    state, out = run([ev(Kind.RINGING, leg="a", ext="101"), summary(False)], policy)
    assert [type(i) for i in out] == [Register, Hide, Finish]


def test_route_to_responsible_waits_for_the_owner_then_registers_and_shows_them():
    policy = Policy(**{**POLICY.__dict__, "route_to_responsible": True})
    state, out = run(
        [ev(Kind.RINGING, leg="a", ext="101"), ev(Kind.RINGING, leg="b", ext="102")], policy
    )
    assert out == [engine.FindResponsible(CLIENT)]
    state, out = engine.responsible_found(state, 77, policy, "E1")
    assert out[0].user_id == 77 and out[0].show is False
    assert out[1:] == [Show((11, 12, 77))]


def test_route_to_responsible_with_no_owner_falls_back_to_ringing_users():
    policy = Policy(**{**POLICY.__dict__, "route_to_responsible": True})
    state, out = run([ev(Kind.RINGING, leg="a", ext="101")], policy)
    state, out = engine.responsible_found(state, None, policy, "E1")
    assert out[0].user_id == 11 and out[0].show is True


def test_click_to_call_is_not_registered_again_and_finishes_the_crm_call():
    state = engine.click_to_call("externalCall.abc", 11, CLIENT, LINE)
    state, out = run(
        [
            ev(Kind.RINGING, leg="o", ext="101", direction=Direction.OUTBOUND),
            ev(Kind.ANSWERED, leg="o", ext="101", direction=Direction.OUTBOUND),
            summary(True, talk=7, ext="101", direction=Direction.OUTBOUND),
        ],
        state=state,
    )
    assert out == [Finish(11, 7, "200")]


def test_failed_originate_finishes_the_crm_call_with_the_reason():
    state = engine.click_to_call("externalCall.abc", 11, CLIENT, LINE)
    state, out = engine.originate_failed(state, "Mango refused: 3100 bad parameters")
    assert out == [Finish(11, 0, "OTHER", "Mango refused: 3100 bad parameters")]
    assert engine.originate_failed(state, "again")[1] == []


def test_callback_request_asks_for_the_clients_crm_owner_first():
    state, out = engine.callback_requested(CLIENT, LINE)
    assert out == [engine.FindResponsible(CLIENT)]
    assert (state.origin, state.registered, state.line_number) == ("callback", False, LINE)
    assert state.awaiting_responsible  # nothing rings until the owner's answer is in


@pytest.mark.parametrize(("user", "logged_for"), [(77, 77), (None, 1)])
def test_a_callback_nobody_can_take_is_registered_silently_and_finished_as_failed(user, logged_for):
    state, _ = engine.callback_requested(CLIENT, LINE)
    state, out = engine.originate_failed(state, "nobody can take it", POLICY, "cmd1", user=user)
    register, finish = out
    assert (register.user_id, register.show, register.call_type) == (logged_for, False, 4)
    assert (register.external_call_id, register.line_number) == ("c1:cmd1", LINE)
    assert finish == Finish(logged_for, 0, "OTHER", "nobody can take it")
    assert state.finished and state.status_code == "OTHER"
    assert engine.originate_failed(state, "again", POLICY, "cmd1")[1] == []


def test_a_failed_callback_with_nobody_to_log_it_for_says_so():
    policy = Policy(external_id_prefix="c1")
    state, _ = engine.callback_requested(CLIENT, LINE)
    state, out = engine.originate_failed(state, "nobody can take it", policy, "cmd1")
    assert out == [] and state.finished and "set a default user" in state.problem


@pytest.mark.parametrize(
    ("events", "due"),
    [
        ([ev(Kind.RINGING, leg="a", ext="101")], [11]),
        ([ev(Kind.RINGING, leg="a", ext="101"), summary(False)], []),
        ([ev(Kind.RINGING, leg="a", ext="101"), ev(Kind.ENDED, leg="a", ext="101", seq=2)], []),
        ([ev(Kind.RINGING, leg="a", ext="101"), ev(Kind.RINGING, leg="b", ext="102")], [11, 12]),
    ],
    ids=["ringing", "ended", "card-closed", "both-ringing"],
)
def test_cards_still_due_when_a_queued_command_finally_leaves(events, due):
    state, _ = run(events)
    assert engine.cards_still_due(state, [11, 12]) == due


def test_callback_form_call_is_type_4():
    state = CallState(origin="callback")
    state, out = run(
        [ev(Kind.RINGING, leg="o", ext="101", direction=Direction.OUTBOUND)], state=state
    )
    assert out[0].call_type == 4


def test_state_survives_json_round_trip():
    state, _ = run([ev(Kind.RINGING, leg="a", ext="101"), ev(Kind.ANSWERED, leg="a", ext="101")])
    assert CallState.from_json(state.to_json()) == state
