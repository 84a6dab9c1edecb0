"""The call journal answers "why didn't the card show?" in words, from what is stored."""

import pytest
from django.contrib.auth.models import User

from bitrixapp.models import B24Command, BitrixUser, PortalStaff
from telephony import journal
from telephony.models import Call

pytestmark = pytest.mark.django_db

APPEARED, DISCONNECTED, MISSED = (
    "call__appeared_inbound",
    "call__disconnected",
    "summary__inbound_missed",
)


def _verdict(call: Call) -> str:
    return " ".join(journal.of_call(call).verdict)


def test_a_shown_card_and_every_step_in_order(client, pbx):
    BitrixUser.objects.create(portal=pbx.portal, user_id=11, name="Ivan Petrov")
    pbx.play(APPEARED, DISCONNECTED, MISSED)
    call = Call.objects.get()
    assert _verdict(call) == "The card was opened for Ivan Petrov (#11)."
    user = User.objects.create(username="b24-admin", is_staff=True)
    PortalStaff.objects.create(user=user, portal=pbx.portal, bitrix_user_id=1)
    client.force_login(user)
    page = client.get(f"/admin/telephony/call/{call.pk}/change/").content.decode()
    said = [
        "Call journal",
        "The card was opened for Ivan Petrov (#11).",
        "Extension 101 rings (client",
        "Log the call in Bitrix24 for Ivan Petrov (#11), the card opens",
        f"Bitrix24&#x27;s call ID: {call.b24_call_id}",
        "Extension 101 hangs up",
        "Close the card for Ivan Petrov (#11)",
        "The call is over: not answered",
        "Finish the call for user #1: missed, 0 s",
    ]
    positions = [page.index(s) for s in said]
    assert positions == sorted(positions)
    assert page.count("Bitrix24 accepted it") == 3  # register, hide, finish


def test_a_late_call_says_it_was_too_late_for_a_card(pbx):
    for name in (APPEARED, DISCONNECTED, MISSED):
        assert pbx.deliver(name, live=False).status_code == 200
    pbx.settle()
    verdict = _verdict(Call.objects.get())
    assert "too late for a card" in verdict


def test_an_internal_call_says_why_it_is_not_logged(pbx):
    pbx.play("call__appeared_internal", "summary__internal")
    verdict = _verdict(Call.objects.get())
    assert verdict.startswith("Not logged in Bitrix24: a call between employees")


def test_nobody_mapped_and_no_default_user(pbx):
    pbx.connection.extensions.all().delete()
    pbx.connection.default_user_id = None
    pbx.connection.save()
    pbx.play(APPEARED)
    verdict = _verdict(Call.objects.get())
    assert "Bitrix24 was never asked to log the call" in verdict
    assert not B24Command.objects.filter(method__startswith="telephony.externalCall").exists()


def test_a_refused_request_is_quoted_with_bitrix24s_reason(pbx):
    pbx.play(APPEARED)
    call = Call.objects.get()
    B24Command.objects.filter(pk=call.register_command_id).update(
        state=B24Command.State.FAILED, error_code="ERROR_CORE", error_description="Wrong line"
    )
    verdict = _verdict(call)
    assert "Bitrix24 refused telephony.externalCall.register: ERROR_CORE Wrong line" in verdict
    assert "card was opened" not in verdict


def test_a_request_still_waiting_says_so(pbx):
    pbx.deliver(APPEARED)
    from bitrixapp import inbox
    from telephony.models import PbxEvent

    inbox.process(PbxEvent, PbxEvent.objects.get().pk)  # processed, not sent yet
    verdict = _verdict(Call.objects.get())
    assert "has not been sent to Bitrix24 yet" in verdict
