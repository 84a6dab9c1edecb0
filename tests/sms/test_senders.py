"""Senders are kept in step with Bitrix24's SMS providers (messageservice.sender.*)."""

import pytest

from sms import senders
from sms.models import SmsSender
from tests.conftest import drain

pytestmark = pytest.mark.django_db


def test_saved_senders_are_added_with_their_handler_url_and_names(kit):
    registered = kit.remote.senders["mts_sms_by"]
    assert registered["TYPE"] == "SMS"
    assert registered["HANDLER"] == kit.sender.handler_url
    assert registered["HANDLER"].endswith(f"/sms/send/{kit.sender.webhook_uuid}/")
    assert registered["NAME"] == {"ru": "MTS SMS", "en": "MTS SMS"}
    assert registered["DESCRIPTION"] == {"ru": "ACME через MTS SMS", "en": "ACME via MTS SMS"}
    kit.sender.refresh_from_db()
    assert kit.sender.registered_code == "mts_sms_by" and kit.sender.registered_at


def test_a_change_is_sent_as_update(kit):
    kit.sender.refresh_from_db()
    kit.sender.name = "ACME notifications"
    kit.sender.save()
    senders.sync(kit.sender)
    drain(kit.portal)
    assert kit.fake.methods() == ["messageservice.sender.update"]
    assert kit.remote.senders["mts_sms_by"]["NAME"]["en"] == "ACME notifications"


def test_already_installed_is_reconciled_with_an_update(kit):
    kit.remote.senders["taken"] = {"CODE": "taken", "HANDLER": "https://old.example/"}
    sender = SmsSender.objects.create(
        portal=kit.portal, account=kit.account, code="taken", name="Taken", alpha_name="ACME"
    )
    senders.sync(sender)
    drain(kit.portal)
    assert kit.fake.methods(include_failed=True) == [
        "messageservice.sender.add",
        "messageservice.sender.update",
    ]
    assert kit.remote.senders["taken"]["HANDLER"] == sender.handler_url
    sender.refresh_from_db()
    assert sender.registered_code == "taken" and not sender.registration_error


def test_a_renamed_code_deletes_the_old_provider_and_adds_the_new(kit):
    kit.sender.refresh_from_db()
    kit.sender.code = "acme_sms"
    kit.sender.save()
    senders.sync(kit.sender)
    drain(kit.portal)
    assert "mts_sms_by" not in kit.remote.senders and "acme_sms" in kit.remote.senders


def test_switching_off_and_deleting_remove_the_provider(kit):
    kit.sender.refresh_from_db()
    kit.sender.is_active = False
    kit.sender.save()
    senders.sync(kit.sender)
    kit.promo.refresh_from_db()
    senders.forget(kit.promo)
    drain(kit.portal)
    assert kit.remote.senders == {}


def test_a_refused_registration_is_kept_on_the_sender(kit):
    kit.fake.fail_next("messageservice.sender.add", "ACCESS_DENIED", status=403)
    sender = SmsSender.objects.create(
        portal=kit.portal, account=kit.account, code="x", name="X", alpha_name="ACME"
    )
    senders.sync(sender)
    drain(kit.portal)
    sender.refresh_from_db()
    assert sender.registration_error.startswith("ACCESS_DENIED")
    assert sender.registered_at is None
