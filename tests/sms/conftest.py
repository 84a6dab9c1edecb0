"""A portal with an MTS account and two senders wired to the live fakes, and what it takes to
play messages through them the way Bitrix24, the workers and MTS would."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from bitrixapp import inbox
from bitrixapp.formdata import php_query
from bitrixapp.models import Portal
from sms import senders, tasks
from sms.models import SmsAccount, SmsDeliveryReport, SmsHandlerCall, SmsMessage, SmsSender
from tests.conftest import drain
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal
from tests.fakes.mts import FakeMts

CREDENTIALS = {"client_id": "4242", "login": "acme", "password": "pw"}
NUMBER = "+375291234567"
CONSENT_FIELD = "UF_CRM_SMS_CONSENT"


@pytest.fixture(scope="session")
def mts_server() -> Iterator[FakeMts]:
    with FakeMts(**CREDENTIALS) as server:
        yield server


@pytest.fixture
def mts(mts_server: FakeMts) -> FakeMts:
    mts_server.reset()
    return mts_server


@dataclass
class Kit:
    client: Any
    fake: FakeBitrix24
    mts: FakeMts
    portal: Portal
    remote: FakePortal
    account: SmsAccount
    sender: SmsSender  # transactional
    promo: SmsSender  # marketing, consent in CONSENT_FIELD

    def handler_call(
        self,
        message_id: str,
        to: str = NUMBER,
        body: str = "Hello from ACME",
        sender: SmsSender | None = None,
        as_json: bool = False,
        **extra: Any,
    ) -> Any:
        """POST what Bitrix24 posts to a sender's HANDLER for one message."""
        sender = sender or self.sender
        form = {
            "type": "SMS",
            "code": sender.code,
            "message_id": message_id,
            "message_to": to,
            "message_body": body,
            "ts": "1718600000",
            "auth": self.remote.auth_data(),
            **extra,
        }
        url = f"/sms/send/{sender.webhook_uuid}/"
        if as_json:
            return self.client.post(url, json.dumps(form), content_type="application/json")
        return self.client.post(
            url, php_query(form), content_type="application/x-www-form-urlencoded"
        )

    def report(self, reports: Any, form: bool = False) -> Any:
        """POST delivery report(s) to the account's DLR URL, as MTS pushes them."""
        url = f"/sms/dlr/{self.account.webhook_uuid}/"
        if form:
            return self.client.post(
                url, urlencode(reports), content_type="application/x-www-form-urlencoded"
            )
        return self.client.post(url, json.dumps(reports), content_type="application/json")

    def settle(self) -> None:
        """Do what the workers would: process stored requests, send queued messages, and
        send the Bitrix24 commands; again until nothing is left (consent answers queue sends)."""
        for _ in range(3):
            for model in (SmsHandlerCall, SmsDeliveryReport):
                for pk in (
                    model.objects.filter(state="received")
                    .order_by("pk")
                    .values_list("pk", flat=True)
                ):
                    inbox.process(model, pk)
            drain(self.portal)
            for pk in SmsMessage.objects.filter(
                status="queued", next_attempt_at__isnull=False
            ).values_list("pk", flat=True):
                tasks.send_message(pk)
            drain(self.portal)

    def statuses(self) -> list[tuple[str, str]]:
        """(MESSAGE_ID, STATUS) Bitrix24 was told, in order."""
        return [(s["MESSAGE_ID"], s["STATUS"]) for s in self.remote.message_statuses]

    def message(self, b24_id: str) -> SmsMessage:
        return SmsMessage.objects.get(b24_message_id=b24_id)


@pytest.fixture
def kit(client, fake, mts, make_portal) -> Kit:
    portal, remote = make_portal()
    account = SmsAccount.objects.create(
        portal=portal, name="MTS SMS", api_url=mts.api_url, credentials=dict(CREDENTIALS)
    )
    sender = SmsSender.objects.create(
        portal=portal, account=account, code="mts_sms_by", name="MTS SMS", alpha_name="ACME"
    )
    promo = SmsSender.objects.create(
        portal=portal,
        account=account,
        code="mts_sms_by_promo",
        name="MTS SMS (marketing)",
        alpha_name="ACMEPROMO",
        kind=SmsSender.Kind.MARKETING,
        consent_field=CONSENT_FIELD,
    )
    for row in (sender, promo):
        senders.sync(row)
    drain(portal)
    fake.calls.clear()
    return Kit(client, fake, mts, portal, remote, account, sender, promo)


def contacts(fake: FakeBitrix24, table: dict[int, Any]) -> list[int]:
    """Answer crm.item.get for contacts: {id: consent value}; returns the ids asked for."""
    asked: list[int] = []

    def item_get(portal: FakePortal, params: dict[str, Any]) -> dict[str, Any]:
        contact = int(params["id"])
        asked.append(contact)
        if contact not in table:
            from tests.fakes.bitrix24 import BitrixError

            raise BitrixError("NOT_FOUND", "Not found", status=400)
        return {"item": {"id": contact, CONSENT_FIELD: table[contact]}}

    fake.set_handler("crm.item.get", item_get)
    return asked
