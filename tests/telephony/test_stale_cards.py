"""Calls that happen while Bitrix24 is unreachable: when it comes back, a call that has
ended meanwhile gets its record but no card; a call still ringing still gets its card.

Mango webhook -> stored event -> engine -> outbox -> live fake Bitrix24 (down, then back),
asserting the exact REST calls in order."""

import pytest
from django.utils import timezone

from bitrixapp import inbox, outbox
from bitrixapp.models import B24Command
from telephony.models import Call, PbxEvent
from tests.conftest import drain

pytestmark = pytest.mark.django_db


def live_during_outage(pbx, *names, entry):
    """Deliver events as they happen; workers process them and the dispatcher tries to send,
    but every request fails: the commands wait in the outbox with a backoff."""
    for name in names:
        assert pbx.deliver(name, entry=entry).status_code == 200
        for event_id in PbxEvent.objects.filter(state="received").values_list("id", flat=True):
            inbox.process(PbxEvent, event_id)
        outbox.dispatch(pbx.portal.pk)


def bitrix24_comes_back(pbx):
    pbx.fake.restore()
    # Stands in for the backoff running out: everything waiting is due now.
    B24Command.objects.filter(state="pending").update(next_attempt_at=timezone.now())
    drain(pbx.portal)


def by_call(pbx):
    """(method, SHOW or USER_ID) per call, keyed by the EXTERNAL_CALL_ID's PBX call key."""
    calls = {}
    for method, params in pbx.calls():
        if method == "register":
            calls[params["EXTERNAL_CALL_ID"].split(":")[1]] = [(method, params["SHOW"])]
        else:
            calls[_key_of(pbx, params["CALL_ID"])].append((method, params.get("USER_ID")))
    return calls


def _key_of(pbx, call_id):
    return Call.objects.get(b24_call_id=call_id).call_key


def test_a_call_that_ended_during_the_outage_gets_no_card_one_still_ringing_does(pbx):
    pbx.fake.outage("500")
    live_during_outage(
        pbx,
        "call__appeared_inbound",  # 101 rings: register(SHOW=1) queued
        "call__appeared_ring_group_b",  # 102 rings too: show [12] queued
        "summary__inbound_missed",  # and the call ends, missed
        entry="ENDED",
    )
    live_during_outage(pbx, "call__appeared_inbound", entry="RINGING")
    assert pbx.calls() == [] and pbx.fake.rejected  # it was down, and we did try
    bitrix24_comes_back(pbx)
    calls = by_call(pbx)
    assert calls["ENDED"] == [("register", 0), ("hide", [11, 12]), ("finish", 1)]
    assert calls["RINGING"] == [("register", 1)]
    assert B24Command.objects.get(method="telephony.externalCall.show").state == "cancelled"


def test_a_card_closed_during_the_outage_is_not_opened_when_it_comes_back(pbx):
    pbx.fake.outage("500")
    live_during_outage(
        pbx,
        "call__appeared_inbound",  # 101 rings: register(SHOW=1) for 11
        entry="Q1",
    )
    assert pbx.deliver("call__disconnected", entry="Q1", seq=2).status_code == 200
    live_during_outage(pbx, "call__appeared_ring_group_b", entry="Q1")  # queue moves on to 102
    bitrix24_comes_back(pbx)
    # 11 stopped ringing while Bitrix24 was down: no card pops up for them; 12 rings now.
    assert by_call(pbx)["Q1"] == [("register", 0), ("hide", [11]), ("show", [12])]
