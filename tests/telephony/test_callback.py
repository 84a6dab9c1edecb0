"""CRM callback requests (ONEXTERNALCALLBACKSTART) through real workers: who rings, and what
Bitrix24 and the admin see when nobody can.

The flow crosses processes: the event view stores the event, a worker runs the handler,
the dispatcher asks Bitrix24 for the client's CRM owner, its result handler picks the
extension, and a worker asks Mango to place the call.
"""

import pytest

from bitrixapp.models import BitrixEvent
from telephony.models import Call, PbxConnection
from tests.conftest import wait_until
from tests.telephony.conftest import CLIENT_E164, LINE


def worker_flow(test):
    return pytest.mark.worker(pytest.mark.django_db(transaction=True)(test))


OWNER_WITH_EXTENSION = 13  # extension 103 on the connection
OWNER_WITHOUT_EXTENSION = 77  # a Bitrix24 user, but not mapped on the PBX


def crm_owner(pbx, user_id):
    pbx.remote.crm_entities[CLIENT_E164] = {
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": 5,
        "ASSIGNED_BY_ID": user_id,
    }


def configure(pbx, **fields):
    PbxConnection.objects.filter(pk=pbx.connection.pk).update(**fields)


def request_callback(pbx):
    """A visitor filled in a CRM callback form on the app's line (Bitrix24 REST docs:
    OnExternalCallBackStart)."""
    form = {"event": "ONEXTERNALCALLBACKSTART", "event_handler_id": "4", "ts": "1"}
    form.update({f"auth[{k}]": v for k, v in pbx.remote.auth_data(with_tokens=False).items()})
    data = {
        "PHONE_NUMBER": CLIENT_E164,
        "LINE_NUMBER": LINE,
        "TEXT": "Call me back",
        "VOICE": "ruinternalfemale",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "5",
    }
    form.update({f"data[{k}]": v for k, v in data.items()})
    response = pbx.client.post("/bitrix/events/", form)
    assert response.status_code == 200, response.content


def rung_extension(pbx):
    wait_until(lambda: pbx.mango.callbacks, what="Mango asked to place the callback")
    (callback,) = pbx.mango.callbacks
    assert callback["to_number"] == CLIENT_E164.lstrip("+")
    return callback["from"]["extension"]


@worker_flow
def test_the_clients_crm_owner_rings_and_the_call_is_logged_for_them(pbx, start_worker):
    crm_owner(pbx, OWNER_WITH_EXTENSION)
    configure(pbx, default_user_id=12)
    start_worker()
    request_callback(pbx)
    assert rung_extension(pbx) == "103"
    call = Call.objects.get()
    assert (
        pbx.deliver(
            "call__appeared_callback", entry="CB1", command_id=call.command_id, to__extension="103"
        ).status_code
        == 200
    )
    wait_until(lambda: len(pbx.calls()) == 2, what="register")
    (search, _), (register, params) = pbx.calls()
    assert (search, register) == ("searchCrmEntities", "register")
    assert (params["USER_ID"], params["TYPE"], params["SHOW"]) == (13, 4, 1)


@worker_flow
def test_an_owner_without_extension_falls_back_to_the_default_user(pbx, start_worker):
    crm_owner(pbx, OWNER_WITHOUT_EXTENSION)
    configure(pbx, default_user_id=12)
    start_worker()
    request_callback(pbx)
    assert rung_extension(pbx) == "102"
    assert pbx.methods() == ["searchCrmEntities"]


@worker_flow
def test_then_the_connections_callback_extension_rings(pbx, start_worker):
    configure(pbx, default_user_id=OWNER_WITHOUT_EXTENSION, callback_extension="500")
    start_worker()
    request_callback(pbx)  # nobody owns the client in the CRM
    assert rung_extension(pbx) == "500"


@worker_flow
def test_when_nobody_can_ring_bitrix24_gets_a_failed_call_with_the_reason(pbx, start_worker):
    crm_owner(pbx, OWNER_WITHOUT_EXTENSION)
    configure(pbx, default_user_id=None, callback_extension="")
    start_worker()
    request_callback(pbx)
    wait_until(lambda: "finish" in pbx.methods(), what="the failed call finished")
    (_, search), (_, register), (_, finish) = pbx.calls()
    assert search == {"PHONE_NUMBER": CLIENT_E164}
    assert register | {"EXTERNAL_CALL_ID": "x"} == {
        "USER_ID": OWNER_WITHOUT_EXTENSION,
        "PHONE_NUMBER": CLIENT_E164,
        "TYPE": 4,
        "SHOW": 0,
        "CRM_CREATE": 1,
        "LINE_NUMBER": LINE,
        "EXTERNAL_CALL_ID": "x",
    }
    assert finish["USER_ID"] == OWNER_WITHOUT_EXTENSION
    assert (finish["STATUS_CODE"], finish["DURATION"]) == ("OTHER", 0)
    # The reason is for the user, in the portal's language (Russian unless told otherwise).
    assert "перезвоните клиенту сами" in finish["FAILED_REASON"]
    assert pbx.mango.callbacks == []
    connection = PbxConnection.objects.get(pk=pbx.connection.pk)
    assert "nobody can take the callback" in connection.last_error
    assert connection.last_error_at is not None
    assert BitrixEvent.objects.get().state == "processed"  # handled, not an error to retry
    call = Call.objects.get()
    assert call.phase == "finished" and call.status_code == "OTHER"


@worker_flow
def test_a_callback_the_pbx_refuses_is_logged_as_failed_for_whoever_was_to_ring(pbx, start_worker):
    configure(pbx, default_user_id=12)
    pbx.mango.callback_result = 3100
    start_worker()
    request_callback(pbx)
    wait_until(lambda: "finish" in pbx.methods(), what="the refused call finished")
    (_, _), (_, register), (_, finish) = pbx.calls()
    assert (register["USER_ID"], register["SHOW"], register["TYPE"]) == (12, 0, 4)
    assert finish["STATUS_CODE"] == "OTHER" and "3100" in finish["FAILED_REASON"]
    assert "originate failed" in PbxConnection.objects.get(pk=pbx.connection.pk).last_error


@pytest.mark.django_db
def test_the_owners_answer_delivered_twice_rings_once(pbx, django_capture_on_commit_callbacks):
    """A resend after a lost reply settles the lookup again: the callback is placed once."""
    from bitrixapp import inbox, outbox
    from bitrixapp.models import B24Command
    from tests.conftest import drain

    crm_owner(pbx, OWNER_WITH_EXTENSION)
    with django_capture_on_commit_callbacks():
        request_callback(pbx)
    inbox.process(BitrixEvent, BitrixEvent.objects.get().pk)
    with django_capture_on_commit_callbacks() as first:
        drain(pbx.portal)
    lookup = B24Command.objects.get(method="telephony.externalCall.searchCrmEntities")
    with django_capture_on_commit_callbacks() as second:
        outbox._run_handler(lookup)
    assert len(first) >= 1 and second == []  # the first queued the originate; no second one
    assert Call.objects.get().state["awaiting_responsible"] is False
