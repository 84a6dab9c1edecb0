# ruff: noqa: RUF001 (the Russian texts: Cyrillic letters that look Latin are meant)
"""Failures told inside Bitrix24 (bitrixapp.problems): each kind makes exactly the Bitrix24
calls of the table — the CRM call finished with a reason, a notification to the user who
acted, one per problem and day to the admins (with a count), one recovery notice — in the
portal's language; nothing for transient errors that recover."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bitrixapp import outbox, problems
from bitrixapp.models import Portal, Problem
from telephony import tasks
from telephony.models import Call, PbxConnection, PbxExtension
from tests.conftest import drain
from tests.telephony.test_click_to_call import click, crm_registered_call

pytestmark = pytest.mark.django_db

ADMIN = 1  # the installer: the fake's portal admin
CLICKER = 77  # a Bitrix24 user with no extension mapped on the connection

TEXTS = {
    "ru": {
        "no_extension": (
            "Для линии Sales не указан ваш внутренний номер — обратитесь к администратору."
        ),
        "admin_no_extension": "Пользователь #77 не может звонить из CRM",
        "recovered_extension": "Пользователь #77 снова может звонить из CRM по линии Sales.",
        "refused": "отказалась совершить звонок",
        "no_connection": "телефония на этом Битрикс24 не подключена",
        "bad_signature": "присылает вебхуки с неверным ключом",
        "webhooks_back": "Вебхуки подключения Moscow office снова принимаются.",
        "unmapped": "Звонки внутреннего номера 105",
        "mapped": "Внутренний номер 105 на подключении Moscow office теперь сопоставлен.",
        "reauth_back": "Приложение снова имеет доступ к Битрикс24.",
    },
    "en": {
        "no_extension": "Your extension is not set for line Sales — ask your administrator.",
        "admin_no_extension": "User #77 cannot call from the CRM",
        "recovered_extension": "User #77 can call from the CRM on line Sales again.",
        "refused": "The PBX refused the call",
        "no_connection": "telephony is not connected on this Bitrix24",
        "bad_signature": "sends webhooks with a wrong key or signature",
        "webhooks_back": "Webhooks of connection Moscow office are accepted again.",
        "unmapped": "Calls of extension 105",
        "mapped": "Extension 105 on connection Moscow office is mapped now.",
        "reauth_back": "The app has access to Bitrix24 again.",
    },
}


@pytest.fixture(params=["ru", "en"])
def lang(request, pbx):
    Portal.objects.filter(pk=pbx.portal.pk).update(language=request.param, installer_user_id=ADMIN)
    pbx.portal.refresh_from_db()
    return request.param


def notices(pbx):
    """im.notify.system.add calls Bitrix24 executed since the last look: (user, message, tag)."""
    drain(pbx.portal)
    sent = [(n["USER_ID"], n["MESSAGE"], n["TAG"]) for n in pbx.remote.notifications]
    pbx.remote.notifications.clear()
    return sent


def a_day_later(kind):
    Problem.objects.filter(kind=kind).update(notified_at=timezone.now() - timedelta(days=1))


def test_click_without_extension_user_told_admins_once_a_day_then_recovery(pbx, lang):
    text = TEXTS[lang]
    click(pbx, crm_registered_call(pbx), user_id=str(CLICKER))
    drain(pbx.portal)
    ((method, finish),) = pbx.calls()
    assert method == "finish" and finish["STATUS_CODE"] == "OTHER"
    assert finish["FAILED_REASON"] == text["no_extension"]
    (user_notice, admin_notice) = notices(pbx)
    assert user_notice[:2] == (CLICKER, text["no_extension"])
    assert admin_notice[0] == ADMIN and text["admin_no_extension"] in admin_notice[1]
    assert "(1 " in admin_notice[1]  # the count
    # The same problem again the same day: the user is told, the admins are not.
    click(pbx, crm_registered_call(pbx), user_id=str(CLICKER))
    assert [n[0] for n in notices(pbx)] == [CLICKER]
    # A day later the admins hear again, with the count, under the same tag (it replaces).
    a_day_later("click_no_extension")
    click(pbx, crm_registered_call(pbx), user_id=str(CLICKER))
    (_, again) = notices(pbx)
    assert again[0] == ADMIN and "(3 " in again[1] and again[2] == admin_notice[2]
    # Fixed: mapping the user's extension closes the problem, the admins are told once.
    PbxExtension.objects.create(connection=pbx.connection, extension="177", user_id=CLICKER)
    assert notices(pbx) == [(ADMIN, text["recovered_extension"], admin_notice[2])]
    assert not Problem.objects.filter(is_open=True).exists()
    click(pbx, crm_registered_call(pbx), user_id=str(CLICKER))  # and the next click rings
    tasks.originate(Call.objects.latest("id").pk, "177")
    assert notices(pbx) == []  # recovery is told once


def test_click_the_pbx_refuses(pbx, lang):
    pbx.mango.callback_result = 3100
    click(pbx, crm_registered_call(pbx))
    tasks.originate(Call.objects.get().pk, "101")
    drain(pbx.portal)
    ((_, finish),) = pbx.calls()
    assert TEXTS[lang]["refused"] in finish["FAILED_REASON"] and "3100" in finish["FAILED_REASON"]
    (user_notice, admin_notice) = notices(pbx)
    assert user_notice[0] == 11 and user_notice[1] == finish["FAILED_REASON"]
    assert admin_notice[0] == ADMIN and "Moscow office" in admin_notice[1]


def test_click_with_no_connection_finishes_the_crm_call(pbx, lang):
    PbxConnection.objects.update(is_active=False)
    call_id = crm_registered_call(pbx)
    click(pbx, call_id)
    drain(pbx.portal)
    ((method, finish),) = pbx.calls()
    assert (method, finish["CALL_ID"], finish["STATUS_CODE"]) == ("finish", call_id, "OTHER")
    assert TEXTS[lang]["no_connection"] in finish["FAILED_REASON"]
    assert [n[0] for n in notices(pbx)] == [11, ADMIN]
    assert Call.objects.count() == 0


def test_wrong_pbx_key_admins_told_once_then_recovery(pbx, lang):
    for _ in range(3):
        response = pbx.post("events/call", b"vpbx_api_key=wrong&sign=bad&json={}")
        assert response.status_code == 403
    ((user, message, tag),) = notices(pbx)
    assert user == ADMIN and TEXTS[lang]["bad_signature"] in message
    assert Problem.objects.get().count == 3
    assert pbx.deliver("call__appeared_inbound").status_code == 200
    assert notices(pbx) == [(ADMIN, TEXTS[lang]["webhooks_back"], tag)]
    assert pbx.deliver("call__appeared_inbound", entry="E2").status_code == 200
    assert notices(pbx) == []


def test_unmapped_extension_seen_in_calls(pbx, lang):
    unmapped = {"to__extension": "105"}
    pbx.play("call__appeared_inbound", "call__connected", "call__disconnected", **unmapped)
    ((user, message, _),) = notices(pbx)
    assert user == ADMIN and TEXTS[lang]["unmapped"] in message
    assert Problem.objects.get(kind="unmapped_extension").count == 1  # one call, not 3 events
    PbxExtension.objects.create(connection=pbx.connection, extension="105", user_id=12)
    assert [n[:2] for n in notices(pbx)] == [(ADMIN, TEXTS[lang]["mapped"])]


def test_parked_portal_admins_told_when_access_is_back(pbx, lang):
    outbox.park(pbx.portal, "PORTAL_DELETED")
    assert Problem.objects.get(kind="portal_reauth").is_open
    Portal.objects.filter(pk=pbx.portal.pk).update(status=Portal.Status.ACTIVE)
    assert notices(pbx) == []  # nothing was queued while nothing could be sent
    problems.resolve(Portal.objects.get(pk=pbx.portal.pk), "portal_reauth", "portal")
    ((user, message, _),) = notices(pbx)
    assert user == ADMIN and message.startswith(TEXTS[lang]["reauth_back"])
    assert "PORTAL_DELETED" in message


def test_transient_errors_that_recover_tell_nobody(pbx, fake, lang):
    fake.fail_next("telephony.externalCall.register", "INTERNAL_SERVER_ERROR", times=2)
    pbx.play("call__appeared_inbound")
    for _ in range(50):
        drain(pbx.portal)
        if "register" in pbx.methods():
            break
        outbox.B24Command.objects.update(next_attempt_at=timezone.now())
    assert "register" in pbx.methods()
    assert notices(pbx) == [] and not Problem.objects.exists()


def test_an_admin_reviving_the_portal_from_the_app_page_tells_the_admins(client, fake, make_portal):
    portal, remote = make_portal(language="en", installer_user_id=ADMIN)
    outbox.park(portal, "PORTAL_DELETED")
    remote.add_user(5, NAME="Second admin")
    remote.admins.add("5")
    response = client.post(
        f"/bitrix/app/?DOMAIN={fake.domain}&PROTOCOL=0&LANG=en",
        remote.frame_payload(session=remote.sign_in(5)),
    )
    assert response.status_code == 200 and b"Access restored" in response.content
    drain(portal)
    told = [(n["USER_ID"], n["MESSAGE"]) for n in remote.notifications]
    back = TEXTS["en"]["reauth_back"]
    # Both hear it: the admin who restored access (whose tokens the app now holds) and the
    # installer before them.
    assert [user for user, _ in told] == [5, ADMIN]
    assert all(message.startswith(back) for _, message in told)
    assert problems.admins_of(Portal.objects.get(pk=portal.pk)) == [5, ADMIN]


def test_install_keeps_the_portals_language(client, fake):
    remote = fake.add_portal(member_id="lang1", domain="lang1.bitrix24.com")
    form = remote.event_payload("ONAPPINSTALL", {"LANGUAGE_ID": "en", "VERSION": "1"})
    assert client.post("/bitrix/install/", form).status_code == 200
    portal = Portal.objects.get(member_id="lang1")
    assert portal.language == "en"
    assert problems.user_message(portal, "click_no_extension", line="L").startswith("Your")
