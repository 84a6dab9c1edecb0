"""Whole-pipeline scenarios: Bitrix24's handler call in → worker → MTS fake → reports and polls
→ the exact status updates Bitrix24 receives."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bitrixapp import inbox, outbox
from bitrixapp.models import B24Command, Portal, Problem
from sms import tasks
from sms.models import SmsDeliveryReport, SmsHandlerCall, SmsMessage, SmsStatusChange
from tests.sms.conftest import CONSENT_FIELD, contacts

pytestmark = pytest.mark.django_db

CONTACT_CARD = {"module_id": "crm", "bindings": [{"OWNER_TYPE_ID": "3", "OWNER_ID": "12"}]}


def test_crm_card_send_is_sent_then_delivered_in_bitrix24(kit):
    answer = kit.handler_call("b24-1", to="8 029 123-45-67", body="Ваш заказ готов", **CONTACT_CARD)
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted", "message_id": "b24-1"}
    kit.settle()

    (sent,) = kit.mts.sent
    assert sent.phone_number == 375291234567
    assert sent.body["extra_id"] == kit.message("b24-1").extra_id
    assert sent.body["callback_url"] == kit.account.dlr_url
    assert sent.body["channels"] == ["sms"]
    assert sent.body["channel_options"]["sms"] == {
        "text": "Ваш заказ готов",
        "alpha_name": "ACME",
        "ttl": kit.account.ttl_s,
    }
    message = kit.message("b24-1")
    assert (message.status, message.provider_message_id) == ("sent", sent.message_id)
    assert (message.encoding, message.segments, message.contact_id) == ("ucs2", 1, 12)

    report = kit.mts.set_status(sent.extra_id, 2, 23)
    assert kit.report(report).json()["status"] == "accepted"
    kit.settle()
    assert kit.statuses() == [("b24-1", "sent"), ("b24-1", "delivered")]
    assert [h.status for h in kit.message("b24-1").history.all()] == ["sent", "delivered"]
    assert all(s["CODE"] == "mts_sms_by" for s in kit.remote.message_statuses)


def test_json_handler_call_is_accepted_too(kit):
    assert kit.handler_call("b24-json", as_json=True).status_code == 200
    kit.settle()
    assert kit.message("b24-json").status == "sent"


def test_robot_send_with_a_bad_number_fails_with_the_reason(kit):
    kit.handler_call("b24-2", to="12345", module_id="bizproc")
    kit.settle()
    message = kit.message("b24-2")
    assert message.status == "failed"
    assert "'12345' is not a valid phone number" in message.reason
    assert kit.mts.sent == []
    assert kit.statuses() == [("b24-2", "failed")]


def test_a_number_outside_the_allowed_regions_is_refused(kit):
    kit.handler_call("b24-ru", to="+7 916 123-45-67")
    kit.settle()
    message = kit.message("b24-ru")
    assert (message.status, message.recipient_e164) == ("failed", None)
    assert "+79161234567 is a number in RU; allowed: BY" in message.reason
    assert kit.mts.sent == []


def test_marketing_without_consent_fails_and_nothing_is_sent(kit):
    asked = contacts(kit.fake, {12: "N"})
    kit.handler_call("b24-3", sender=kit.promo, **CONTACT_CARD)
    kit.settle()
    message = kit.message("b24-3")
    assert message.status == "failed"
    assert f"{CONSENT_FIELD} is not yes" in message.reason
    assert kit.mts.sent == [] and asked == [12]
    assert kit.statuses() == [("b24-3", "failed")]


def test_marketing_with_consent_is_sent_and_the_answer_is_cached(kit):
    asked = contacts(kit.fake, {12: "Y"})
    kit.handler_call("b24-4", sender=kit.promo, **CONTACT_CARD)
    kit.settle()
    kit.handler_call("b24-5", sender=kit.promo, **CONTACT_CARD)
    kit.settle()
    assert [kit.message(i).status for i in ("b24-4", "b24-5")] == ["sent", "sent"]
    assert {s.body["channel_options"]["sms"]["alpha_name"] for s in kit.mts.sent} == {"ACMEPROMO"}
    assert asked == [12]  # the second message used the cached answer


def test_marketing_from_a_workflow_reads_the_contact_from_the_document(kit):
    asked = contacts(kit.fake, {77: "1"})
    document = {"module_id": "bizproc", "document_id": ["crm", "CCrmDocumentContact", "CONTACT_77"]}
    kit.handler_call("b24-wf", sender=kit.promo, **document)
    kit.settle()
    assert kit.message("b24-wf").status == "sent" and asked == [77]


def test_marketing_without_a_bound_contact_is_not_sent(kit):
    kit.handler_call("b24-6", sender=kit.promo)
    kit.settle()
    assert kit.message("b24-6").status == "failed"
    assert "consent unknown" in kit.message("b24-6").reason
    assert kit.mts.sent == []


def test_duplicate_handler_call_is_stored_once_and_sent_once(kit):
    assert kit.handler_call("b24-7").json()["status"] == "accepted"
    assert kit.handler_call("b24-7").json()["status"] == "duplicate"
    kit.settle()
    assert len(kit.mts.sent) == 1 and SmsMessage.objects.count() == 1


def test_duplicate_and_out_of_order_reports_change_nothing(kit):
    kit.handler_call("b24-8")
    kit.settle()
    extra_id = kit.message("b24-8").extra_id
    delivered = kit.mts.set_status(extra_id, 2, 23)
    late_progress = {**delivered, "status": 1, "substatus": 12, "time": delivered["time"] - 1}
    assert kit.report(delivered).status_code == 200
    assert kit.report(delivered).json() == {"status": "duplicate"}
    kit.report([late_progress, {**delivered, "status": 3, "substatus": 26}])
    kit.settle()
    assert kit.message("b24-8").status == "delivered"
    assert kit.statuses() == [("b24-8", "sent"), ("b24-8", "delivered")]


def test_undelivered_within_ttl_and_failed_are_told_apart(kit):
    kit.handler_call("b24-u")
    kit.handler_call("b24-f")
    kit.settle()
    for b24_id, substatus in (("b24-u", 26), ("b24-f", 36)):
        kit.report(kit.mts.set_status(kit.message(b24_id).extra_id, 3, substatus), form=True)
    kit.settle()
    assert kit.message("b24-u").status == "undelivered"
    assert kit.message("b24-f").status == "failed"
    assert "send error" in kit.message("b24-f").reason


def test_a_lost_report_is_found_by_polling(kit):
    kit.handler_call("b24-9")
    kit.settle()
    message = kit.message("b24-9")
    kit.mts.set_status(message.extra_id, 2, 23)  # delivered, but the push never came
    assert tasks.poll_open() == 0  # too early: reports usually come within minutes
    SmsMessage.objects.filter(pk=message.pk).update(sent_at=timezone.now() - timedelta(minutes=6))
    assert tasks.poll_statuses()["polled"] == 1
    kit.settle()
    assert kit.message("b24-9").status == "delivered"
    assert SmsStatusChange.objects.filter(message=message, source="poll").exists()
    assert kit.statuses()[-1] == ("b24-9", "delivered")


def test_a_message_without_any_status_past_its_lifetime_is_closed_undelivered(kit):
    kit.handler_call("b24-10")
    kit.settle()
    message = kit.message("b24-10")
    long_ago = timezone.now() - timedelta(seconds=kit.account.ttl_s) - timedelta(minutes=11)
    SmsMessage.objects.filter(pk=message.pk).update(sent_at=long_ago)
    assert tasks.poll_statuses()["expired"] == 1
    kit.settle()
    message.refresh_from_db()
    assert message.status == "undelivered" and "lifetime" in message.reason
    assert kit.statuses()[-1] == ("b24-10", "undelivered")


def test_bitrix24_down_during_status_updates_gets_them_later(kit):
    kit.handler_call("b24-11")
    kit.settle()
    kit.fake.outage("500")
    kit.report(kit.mts.set_status(kit.message("b24-11").extra_id, 2, 23))
    for pk in SmsDeliveryReport.objects.values_list("pk", flat=True):
        inbox.process(SmsDeliveryReport, pk)
    outbox.dispatch(kit.portal.pk)
    assert kit.message("b24-11").status == "delivered"
    assert kit.statuses() == [("b24-11", "sent")]  # Bitrix24 has not heard yet
    kit.fake.restore()
    B24Command.objects.filter(state="pending").update(next_attempt_at=timezone.now())
    kit.settle()
    assert kit.statuses() == [("b24-11", "sent"), ("b24-11", "delivered")]


def test_permanent_gateway_refusal_fails_the_message(kit):
    kit.mts.alpha_names = {"OTHER"}
    kit.handler_call("b24-12")
    kit.settle()
    message = kit.message("b24-12")
    assert message.status == "failed"
    assert "HTTP 400, error 5" in message.reason and "Unknown alpha_name" in message.reason
    assert kit.statuses() == [("b24-12", "failed")]


def test_a_refused_sender_name_reaches_the_admins_once_then_its_recovery(kit):
    Portal.objects.filter(pk=kit.portal.pk).update(language="en", installer_user_id=1)
    kit.mts.alpha_names = {"OTHER"}
    for n in range(3):
        kit.handler_call(f"b24-refused-{n}")
    kit.settle()
    ((user, text, tag),) = [
        (n["USER_ID"], n["MESSAGE"], n["TAG"]) for n in kit.remote.notifications
    ]
    assert user == 1 and "The SMS gateway refuses sender ACME" in text
    assert "Unknown alpha_name" in text
    problem = Problem.objects.get(kind="sms_sender_refused")
    assert (problem.count, problem.is_open) == (3, True)
    kit.remote.notifications.clear()

    kit.mts.alpha_names = None  # the gateway registered the name
    kit.handler_call("b24-accepted")
    kit.settle()
    ((user, text, again),) = [
        (n["USER_ID"], n["MESSAGE"], n["TAG"]) for n in kit.remote.notifications
    ]
    assert (user, text, again) == (1, "The SMS gateway accepts sender ACME again.", tag)
    assert not Problem.objects.get(pk=problem.pk).is_open


def test_transient_gateway_errors_are_retried_until_accepted(kit):
    kit.mts.fail_next("internal", times=2)
    kit.handler_call("b24-13")
    kit.settle()  # each round is one more try
    message = kit.message("b24-13")
    assert (message.status, message.attempts) == ("sent", 3)
    assert [h.status for h in message.history.all()] == ["sent"]
    kit.account.refresh_from_db()
    assert "HTTP 500" in kit.account.last_error


def test_transient_errors_give_up_after_the_cap(kit):
    kit.mts.fail_next("internal", times=100)
    kit.handler_call("b24-14")
    kit.settle()
    message = kit.message("b24-14")
    for _ in range(tasks.SEND_ATTEMPTS):
        tasks.send_message(message.pk)
    message.refresh_from_db()
    assert message.status == "failed"
    assert message.reason.startswith(f"gave up after {tasks.SEND_ATTEMPTS} tries")


def test_a_lost_send_task_is_queued_again_by_the_sweep(kit):
    kit.handler_call("b24-15")
    for pk in SmsHandlerCall.objects.values_list("pk", flat=True):
        inbox.process(SmsHandlerCall, pk)
    message = kit.message("b24-15")
    SmsMessage.objects.filter(pk=message.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    assert tasks.resume_sends() == 1
    assert tasks.resume_sends() == 0  # booked: not queued twice
