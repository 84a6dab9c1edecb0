"""The SMS admin pages render, keep credentials secret, and the campaign summary counts."""

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from sms.admin import campaign_summary
from sms.models import SmsMessage, SmsSender

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_account_page_shows_the_dlr_url_and_never_the_password(kit, admin_client):
    # A password no random token on the page can contain by chance (a two-letter one did).
    kit.account.credentials = {**kit.account.credentials, "password": "never-shown-7Hq2x"}
    kit.account.save()
    page = admin_client.get(f"/admin/sms/smsaccount/{kit.account.pk}/change/").content.decode()
    assert kit.account.dlr_url in page
    assert "never-shown-7Hq2x" not in page


def test_a_second_sender_with_a_taken_code_is_refused_in_the_form(kit, admin_client):
    answer = admin_client.post(
        "/admin/sms/smssender/add/",
        {
            "account": kit.account.pk,
            "code": "mts_sms_by",
            "name": "Again",
            "alpha_name": "ACME",
            "kind": "transactional",
            "is_active": "on",
        },
    )
    assert answer.status_code == 200
    assert "Another sender of this portal has this code." in answer.content.decode()
    assert SmsSender.objects.filter(code="mts_sms_by").count() == 1


def test_saving_a_sender_in_the_admin_registers_it(kit, admin_client):
    answer = admin_client.post(
        "/admin/sms/smssender/add/",
        {
            "account": kit.account.pk,
            "code": "acme_info",
            "name": "ACME info",
            "alpha_name": "ACMEINFO",
            "kind": "transactional",
            "is_active": "on",
        },
    )
    assert answer.status_code == 302
    sender = SmsSender.objects.get(code="acme_info")
    assert sender.portal_id == kit.portal.pk
    assert sender.registered_at is None  # queued: the outbox sends messageservice.sender.add
    from bitrixapp.models import B24Command

    assert B24Command.objects.filter(
        method="messageservice.sender.add", params__CODE="acme_info"
    ).exists()


def test_message_page_and_campaign_summary(kit, admin_client):
    kit.handler_call("b24-1")
    kit.handler_call("b24-2", to="123")
    kit.settle()
    message = kit.message("b24-1")
    page = admin_client.get(f"/admin/sms/smsmessage/{message.pk}/change/").content.decode()
    assert "accepted by the gateway" in page and "messageservice.message.status.update" in page
    summary = admin_client.get("/admin/sms/smsmessage/campaign/")
    assert summary.status_code == 200 and "MTS SMS" in summary.content.decode()
    now = timezone.now()
    (row,) = campaign_summary(SmsMessage.objects.all(), now - timezone.timedelta(hours=1), now)
    assert (row["total"], row["by_status"]["sent"], row["by_status"]["failed"]) == (
        2,
        (1, 1),
        (1, 1),
    )
