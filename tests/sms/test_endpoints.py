"""The handler and DLR endpoints: what they accept, what they refuse and how (JSON errors),
and what they keep."""

import json
import uuid

import pytest

from sms.models import SmsDeliveryReport, SmsHandlerCall

pytestmark = pytest.mark.django_db


def test_handler_call_with_a_wrong_application_token_is_refused_and_not_kept(kit):
    kit.remote.application_token = "forged"
    answer = kit.handler_call("b24-1")
    assert answer.status_code == 403
    assert answer.json()["error"] and "auth[application_token]" in answer.json()["detail"]
    assert not SmsHandlerCall.objects.exists()


def test_unknown_or_switched_off_sender_url_is_404(kit):
    answer = kit.client.post(f"/sms/send/{uuid.uuid4()}/", {"message_id": "1"})
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    kit.sender.is_active = False
    kit.sender.save()
    assert kit.handler_call("b24-1").status_code == 404


def test_handler_call_without_message_id_is_400_and_kept_as_rejected(kit):
    answer = kit.handler_call("")
    assert answer.status_code == 400
    assert answer.json()["field"] == "message_id"
    row = SmsHandlerCall.objects.get()
    assert row.state == "rejected" and "message_id" in row.error


def test_stored_handler_call_has_its_tokens_masked(kit):
    kit.handler_call("b24-1")
    body = SmsHandlerCall.objects.get().body
    assert kit.remote.access_token not in body and kit.remote.application_token not in body
    assert "message_id=b24-1" in body


def test_report_accepts_an_object_an_array_and_form_fields(kit):
    one = {"message_id": "m1", "extra_id": "b24sms-1", "status": 2, "substatus": 23}
    assert kit.report(one).json() == {"status": "accepted", "reports": 1}
    assert kit.report([one, {**one, "status": 1}]).json() == {"status": "accepted", "reports": 2}
    assert kit.report({**one, "status": "3"}, form=True).json()["status"] == "accepted"
    assert SmsDeliveryReport.objects.filter(state="received").count() == 3


@pytest.mark.parametrize(
    "body, field",
    [
        ({"status": 2}, "message_id"),
        ({"message_id": "m1"}, "status"),
        ({"message_id": "m1", "status": "delivered"}, "status"),
        ([{"message_id": "m1", "status": 2}, 5], "[1]"),
        ([], None),
    ],
)
def test_unreadable_report_is_400_naming_the_field_and_kept_as_rejected(kit, body, field):
    answer = kit.report(body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert answer.json().get("field") == field
    assert SmsDeliveryReport.objects.get().state == "rejected"


def test_report_for_an_unknown_account_is_404(kit):
    answer = kit.client.post(
        f"/sms/dlr/{uuid.uuid4()}/", json.dumps({"status": 2}), content_type="application/json"
    )
    assert answer.status_code == 404


def test_a_report_nobody_sent_is_ignored_with_the_reason(kit):
    from bitrixapp import inbox

    kit.report({"message_id": "nobody", "status": 2})
    row = SmsDeliveryReport.objects.get()
    assert inbox.process(SmsDeliveryReport, row.pk) == "ignored"
    row.refresh_from_db()
    assert "no message of this account" in row.error
