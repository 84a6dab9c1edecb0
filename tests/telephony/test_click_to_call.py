"""Click-to-call (ONEXTERNALCALLSTART); the CRM callback form is in test_callback.py."""

import pytest

from bitrixapp import inbox
from bitrixapp.models import BitrixEvent
from telephony import tasks
from telephony.models import Call
from tests.telephony.conftest import CLIENT_E164, LINE

pytestmark = pytest.mark.django_db


def bitrix_event(pbx, name, **data):
    form = {"event": name, "event_handler_id": "3", "ts": "1"}
    form.update({f"auth[{k}]": v for k, v in pbx.remote.auth_data(with_tokens=False).items()})
    form.update({f"data[{k}]": v for k, v in data.items()})
    response = pbx.client.post("/bitrix/events/", form)
    assert response.status_code == 200, response.content
    inbox.process(BitrixEvent, response.json()["event_id"])
    return BitrixEvent.objects.get(pk=response.json()["event_id"])


def click(pbx, call_id, user_id="11", **data):
    """ONEXTERNALCALLSTART: a user clicked the client's number in the CRM."""
    return bitrix_event(
        pbx,
        "ONEXTERNALCALLSTART",
        CALL_ID=call_id,
        USER_ID=user_id,
        PHONE_NUMBER=CLIENT_E164,
        LINE_NUMBER=LINE,
        **data,
    )


def crm_registered_call(pbx):
    """What Bitrix24 does before it sends ONEXTERNALCALLSTART: it registers the call itself."""
    import requests

    reply = requests.post(
        pbx.fake.rest_url + "telephony.externalCall.register",
        json={
            "auth": pbx.remote.access_token,
            "USER_ID": 11,
            "PHONE_NUMBER": CLIENT_E164,
            "TYPE": 1,
            "LINE_NUMBER": LINE,
        },
        timeout=5,
    )
    pbx.fake.reset()
    return reply.json()["result"]["CALL_ID"]


def test_j_click_to_call_rings_the_extension_and_finishes_the_crm_call(pbx):
    call_id = crm_registered_call(pbx)
    click(pbx, call_id, EXTENSION="", CALL_LIST_ID="0")
    call = Call.objects.get()
    tasks.originate(call.pk, "101")
    (callback,) = pbx.mango.callbacks
    assert callback["from"] == {"extension": "101"}
    assert callback["to_number"] == "79161234567"
    assert callback["command_id"] == call.command_id
    pbx.play(
        "call__appeared_callback",
        "call__connected_outbound",
        "summary__outbound_answered",
        command_id=call.command_id,
        entry="C1",
    )
    assert pbx.methods() == ["finish"]  # never a second register
    assert pbx.calls()[0][1]["CALL_ID"] == call_id


def test_j_failed_originate_finishes_the_call_with_the_reason(pbx):
    call_id = crm_registered_call(pbx)
    pbx.mango.callback_result = 3100
    click(pbx, call_id)
    tasks.originate(Call.objects.get().pk, "101")
    pbx.settle()
    ((method, finish),) = pbx.calls()
    assert method == "finish" and finish["STATUS_CODE"] == "OTHER"
    assert "3100" in finish["FAILED_REASON"]


def test_j_user_without_extension_is_finished_at_once(pbx):
    call_id = crm_registered_call(pbx)
    click(pbx, call_id, user_id="77")
    pbx.settle()
    assert "не указан ваш внутренний номер" in pbx.calls()[0][1]["FAILED_REASON"]
    assert pbx.mango.callbacks == []


def test_j_the_same_click_delivered_twice_starts_one_call(pbx):
    call_id = crm_registered_call(pbx)
    for _ in range(2):
        click(pbx, call_id)
    assert Call.objects.count() == 1
