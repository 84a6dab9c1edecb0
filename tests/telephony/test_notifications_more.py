# ruff: noqa: RUF001 (the Russian texts: Cyrillic letters that look Latin are meant)
"""The failure kinds not covered in test_notifications: a line Bitrix24 refuses, recordings
that can never be downloaded, CRM callbacks nobody can ring or the PBX refuses; where each
recovers; counts in plural forms; a portal whose app lacks the im scope. Each makes exactly
the Bitrix24 calls of the table, in Russian and in English by the portal's language."""

import re

import pytest

from bitrixapp import problems
from bitrixapp.models import Portal, Problem
from telephony import directory, tasks
from telephony.models import Call, CallRecording, PbxConnection, PbxExtension, PbxLine
from tests.fakes.bitrix24 import SCOPE
from tests.telephony.conftest import API_KEY, API_SALT, CLIENT_E164, LINE
from tests.telephony.test_callback import crm_owner
from tests.telephony.test_click_to_call import bitrix_event, click, crm_registered_call
from tests.telephony.test_notifications import ADMIN, CLICKER, a_day_later, lang, notices

pytestmark = pytest.mark.django_db
__all__ = ["lang"]  # the fixture, imported for these tests

TEXTS = {
    "ru": {
        "callback_no_connection": "не настроено ни одного подключения к АТС",
        "callbacks_connected": (
            "Запросы обратного звонка снова могут дозвониться: подключение к АТС настроено."
        ),
        "line_refused": "Битрикс24 отказался зарегистрировать линию Sales: ACCESS_DENIED",
        "line_back": "Линия Sales теперь зарегистрирована в Битрикс24.",
        "twice": "(2 раза с ",
        "thrice": "(3 раза с ",
        "recording_failed": "Записи разговоров подключения Moscow office не удаётся скачать",
        "one_recording": "(1 запись с ",
        "two_recordings": "(2 записи с ",
        "recordings_back": "Записи разговоров подключения Moscow office снова скачиваются.",
        "nobody_user": f"Клиент просил перезвонить на {CLIENT_E164}, но дозвониться было некому",
        "nobody_admin": "Запросы обратного звонка на подключении Moscow office не могут",
        "one_request": "(1 запрос с ",
        "three_requests": "(3 запроса с ",
        "callbacks_back": (
            "Запросы обратного звонка на подключении Moscow office снова вызывают сотрудников."
        ),
        "refused_user": "но АТС отказалась совершить звонок",
        "refused_admin": "АТС подключения Moscow office отказывается выполнять обратные звонки",
        "once": "(1 раз с ",
        "refused_back": "АТС подключения Moscow office снова выполняет обратные звонки.",
        "crm_calls_back": "Звонки из CRM снова работают: подключение к АТС настроено.",
        "no_scope": "приложение установлено без права im",
        "two_notices": "(2 уведомления не доставлено с ",
        "notices_back": "Уведомления приложения телефонии снова приходят вам в Битрикс24.",
    },
    "en": {
        "callback_no_connection": "no PBX connection is set up in the telephony app",
        "callbacks_connected": "Callback requests can ring again: a PBX connection is set up.",
        "line_refused": "Bitrix24 refused to register line Sales: ACCESS_DENIED",
        "line_back": "Line Sales is registered in Bitrix24 now.",
        "twice": "(2 times since ",
        "thrice": "(3 times since ",
        "recording_failed": "Call recordings of connection Moscow office cannot be downloaded",
        "one_recording": "(1 recording since ",
        "two_recordings": "(2 recordings since ",
        "recordings_back": "Call recordings of connection Moscow office download again.",
        "nobody_user": f"A client asked for a callback to {CLIENT_E164}, but nobody could be rung",
        "nobody_admin": "Callback requests on connection Moscow office cannot ring anyone",
        "one_request": "(1 request since ",
        "three_requests": "(3 requests since ",
        "callbacks_back": "Callback requests on connection Moscow office ring again.",
        "refused_user": "but the PBX refused the call",
        "refused_admin": "The PBX of connection Moscow office refuses callback requests",
        "once": "(1 time since ",
        "refused_back": "The PBX of connection Moscow office places callback requests again.",
        "crm_calls_back": "Calls from the CRM can be placed again: a PBX connection is set up.",
        "no_scope": "the app was installed without the im (notifications) scope",
        "two_notices": "(2 notifications not delivered since ",
        "notices_back": "Notifications of the telephony app reach you in Bitrix24 again.",
    },
}


def line_adds(pbx):
    return [c for c in pbx.fake.calls_of("telephony.externalLine.add") if c.ok]


# ---------------------------------------------------------------- a line Bitrix24 refuses


def test_a_line_bitrix24_refuses_admins_told_once_a_day_then_registered(pbx, lang):
    text, line = TEXTS[lang], PbxLine.objects.get()
    pbx.fake.fail_next("telephony.externalLine.add", "ACCESS_DENIED", times=2)
    directory.register_line(line)
    ((user, message, tag),) = notices(pbx)
    assert user == ADMIN and message.startswith(text["line_refused"])
    assert not line_adds(pbx) and "Sales" not in pbx.remote.lines.get(LINE, {}).get("NAME", "")
    directory.register_line(line)  # refused again the same day: counted, nobody told
    assert notices(pbx) == []
    assert Problem.objects.get(kind="line_refused").count == 2
    assert text["twice"] in problems.open_problems(pbx.portal)[0].text
    a_day_later("line_refused")
    pbx.fake.fail_next("telephony.externalLine.add", "ACCESS_DENIED")
    directory.register_line(line)
    ((_, again, again_tag),) = notices(pbx)
    assert text["thrice"] in again and again_tag == tag
    # Bitrix24 takes the line: registered, the problem closes and the admins hear once.
    directory.register_line(line)
    assert notices(pbx) == [(ADMIN, text["line_back"], tag)]
    assert [c.params["NUMBER"] for c in line_adds(pbx)] == [LINE]
    assert not Problem.objects.filter(is_open=True).exists()


# ---------------------------------------------------------------- recordings


def answered_call(pbx) -> Call:
    pbx.play("call__appeared_inbound", "call__connected", "summary__inbound_answered")
    assert notices(pbx) == []  # a healthy call tells nobody anything
    return Call.objects.get()


def download(call: Call, recording_id: str) -> CallRecording:
    recording = CallRecording.objects.create(call=call, recording_id=recording_id)
    tasks.download_recording.apply(args=[recording.pk])
    recording.refresh_from_db()
    return recording


def test_recordings_the_pbx_refuses_for_good_admins_told_once_then_downloaded(pbx, lang):
    text = TEXTS[lang]
    call = answered_call(pbx)
    pbx.mango.recordings.update({"rec-1": b"ID3a", "rec-2": b"ID3b", "rec-3": b"ID3c"})
    PbxConnection.objects.filter(pk=pbx.connection.pk).update(
        credentials={"api_key": API_KEY, "api_salt": "not-the-salt"}
    )
    assert download(call, "rec-1").state == "failed"  # a permanent refusal: one try
    ((user, message, tag),) = notices(pbx)
    assert user == ADMIN and message.startswith(text["recording_failed"])
    assert "3102" in message and text["one_recording"] in message
    assert download(call, "rec-2").state == "failed"
    assert notices(pbx) == []  # the same day: counted, not told again
    assert text["two_recordings"] in problems.open_problems(pbx.portal)[0].text
    # The admin fixes the key; the next recording of the connection downloads.
    connection = PbxConnection.objects.get(pk=pbx.connection.pk)
    connection.credentials = {"api_key": API_KEY, "api_salt": API_SALT}
    connection.save()
    assert download(call, "rec-3").state == "downloaded"
    assert notices(pbx) == [(ADMIN, text["recordings_back"], tag)]
    assert not Problem.objects.filter(kind="recording_failed", is_open=True).exists()


# ---------------------------------------------------------------- CRM callbacks


def request_callback(pbx):
    """A visitor filled in a CRM callback form on the app's line; the app asks Bitrix24 who
    owns the client, and its answer routes the callback (all sent by `notices`)."""
    bitrix_event(pbx, "ONEXTERNALCALLBACKSTART", PHONE_NUMBER=CLIENT_E164, LINE_NUMBER=LINE)


def test_a_callback_nobody_can_ring_then_the_default_user_gets_an_extension(pbx, lang):
    text = TEXTS[lang]
    crm_owner(pbx, CLICKER)  # the owner and the default user (1) have no extension
    request_callback(pbx)
    user_notice, admin_notice = notices(pbx)
    (_, _), (_, register), (_, finish) = pbx.calls()
    assert register["USER_ID"] == CLICKER and finish["STATUS_CODE"] == "OTHER"
    assert user_notice[:2] == (CLICKER, finish["FAILED_REASON"])
    assert user_notice[1].startswith(text["nobody_user"])
    assert admin_notice[0] == ADMIN and admin_notice[1].startswith(text["nobody_admin"])
    assert text["one_request"] in admin_notice[1]
    request_callback(pbx)
    assert [n[0] for n in notices(pbx)] == [CLICKER]  # the admins not again the same day
    a_day_later("callback_impossible")
    request_callback(pbx)
    assert [n[0] for n in notices(pbx)] == [CLICKER, ADMIN]
    assert pbx.mango.callbacks == []
    # The admin maps an extension for the default user: every callback can ring now.
    PbxExtension.objects.create(connection=pbx.connection, extension="100", user_id=1)
    assert notices(pbx) == [(ADMIN, text["callbacks_back"], admin_notice[2])]
    assert not Problem.objects.filter(is_open=True).exists()


def test_a_callback_the_connection_can_ring_after_a_callback_extension_is_set(pbx, lang):
    crm_owner(pbx, CLICKER)
    request_callback(pbx)
    assert len(notices(pbx)) == 2
    connection = PbxConnection.objects.get(pk=pbx.connection.pk)
    connection.callback_extension = "500"
    connection.save()
    assert notices(pbx) == [
        (
            ADMIN,
            TEXTS[lang]["callbacks_back"],
            "|".join(("telephony-bridge", "callback_impossible", f"connection:{connection.pk}")),
        )
    ]


def test_a_callback_the_pbx_refuses_then_places(pbx, lang):
    text = TEXTS[lang]
    crm_owner(pbx, 13)  # extension 103
    pbx.mango.callback_result = 3100
    request_callback(pbx)
    tasks.originate(Call.objects.get().pk, "103")
    user_notice, admin_notice = notices(pbx)
    (_, _), (_, register), (_, finish) = pbx.calls()
    assert register["USER_ID"] == 13 and finish["STATUS_CODE"] == "OTHER"
    assert user_notice[:2] == (13, finish["FAILED_REASON"]) and "3100" in user_notice[1]
    assert text["refused_user"] in user_notice[1]
    assert admin_notice[0] == ADMIN and admin_notice[1].startswith(text["refused_admin"])
    assert text["once"] in admin_notice[1]
    request_callback(pbx)
    tasks.originate(Call.objects.latest("id").pk, "103")
    assert [n[0] for n in notices(pbx)] == [13]  # the admins not again the same day
    # The PBX takes the next one: closed, the admins told once.
    pbx.mango.callback_result = 1000
    request_callback(pbx)
    tasks.originate(Call.objects.latest("id").pk, "103")
    assert notices(pbx) == [(ADMIN, text["refused_back"], admin_notice[2])]
    assert not Problem.objects.filter(is_open=True).exists()


# ---------------------------------------------------------------- no PBX connection


def test_click_with_no_connection_recovers_when_a_connection_is_active_again(pbx, lang):
    PbxConnection.objects.update(is_active=False)
    click(pbx, crm_registered_call(pbx))
    assert [n[0] for n in notices(pbx)] == [11, ADMIN]
    connection = PbxConnection.objects.get(pk=pbx.connection.pk)
    connection.save()  # still inactive: nothing changes
    assert notices(pbx) == []
    connection.is_active = True
    connection.save()
    ((user, message, tag),) = notices(pbx)
    assert (user, message, tag) == (
        ADMIN,
        TEXTS[lang]["crm_calls_back"],
        "telephony-bridge|click_no_connection|portal",
    )


# ---------------------------------------------------------------- plural counts


@pytest.mark.parametrize(
    ("count", "ru", "en"),
    [
        (1, "(1 попытка с ", "(1 attempt since "),
        (2, "(2 попытки с ", "(2 attempts since "),
        (5, "(5 попыток с ", "(5 attempts since "),
        (21, "(21 попытка с ", "(21 attempts since "),
    ],
)
def test_counts_in_messages_take_the_languages_plural_form(pbx, count, ru, en):
    problem = problems.report(pbx.portal, "click_no_connection", "portal")
    Problem.objects.filter(pk=problem.pk).update(count=count)
    for language, expected in (("ru", ru), ("en", en)):
        Portal.objects.filter(pk=pbx.portal.pk).update(language=language)
        (listed,) = problems.open_problems(pbx.portal)
        assert expected in listed.text


def test_every_counted_message_has_its_russian_forms():
    """Each admin message is translated, and in Russian "1 …" and "2 …" differ (попытка /
    попытки, раз / раза, запись / записи, ...): the catalogue has all three forms."""
    counted = [
        (name, kind)
        for name, kind in problems.KINDS.items()
        if "7 " in problems.message(Portal(language="en"), kind.admin_message, count=7)
    ]
    assert len(counted) == len(problems.KINDS) - 1  # all but portal_reauth
    for name, kind in counted:
        one, two, five = (
            problems.message(Portal(language="ru"), kind.admin_message, count=n, since="S")
            for n in (1, 2, 5)
        )
        assert re.sub(r"\b1 ", "2 ", one) != two, name
        assert " с S)" in five and re.search(r"\b5 ", five), name


# ---------------------------------------------------------------- no im scope


def test_a_portal_without_the_im_scope_sees_its_problems_on_the_app_page(pbx, lang):
    text = TEXTS[lang]
    pbx.remote.scope = "telephony,messageservice,crm,user_basic,placement"  # before `im`
    click(pbx, crm_registered_call(pbx), user_id=str(CLICKER))
    assert notices(pbx) == []  # Bitrix24 refused both (insufficient_scope)
    refused = pbx.fake.calls_of("im.notify.system.add")
    assert [c.error for c in refused] == ["insufficient_scope", "insufficient_scope"]
    scope_problem = Problem.objects.get(kind="notify_no_scope")
    assert scope_problem.count == 2 and scope_problem.notified_at is None
    assert Problem.objects.get(kind="click_no_extension").notified_at is None  # not told
    # The admin opens the app: both problems are listed, with what to do about the scope.
    response = pbx.client.post(
        f"/bitrix/app/?DOMAIN={pbx.fake.domain}&PROTOCOL=0&LANG={lang}",
        pbx.remote.frame_payload(),
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert text["no_scope"] in page and text["two_notices"] in page
    assert "problem-click_no_extension" in page and "problem-notify_no_scope" in page
    # The app is updated with the im scope: the next click tells the user and the admins
    # (they never heard of it), and that notifications work again.
    pbx.remote.scope = SCOPE
    click(pbx, crm_registered_call(pbx), user_id=str(CLICKER))
    told = notices(pbx)
    assert [n[0] for n in told] == [CLICKER, ADMIN, ADMIN]
    assert told[2][1] == text["notices_back"]
    assert not Problem.objects.filter(kind="notify_no_scope", is_open=True).exists()


def test_a_callback_with_no_pbx_connection_reaches_the_admins_and_recovers(pbx, lang):
    PbxConnection.objects.update(is_active=False)
    request_callback(pbx)
    ((admin, text, tag),) = notices(pbx)
    assert admin == ADMIN and CLIENT_E164 in text
    assert TEXTS[lang]["callback_no_connection"] in text
    assert pbx.calls() == [] and pbx.mango.callbacks == []
    request_callback(pbx)
    assert notices(pbx) == []  # once a day
    connection = PbxConnection.objects.get()
    connection.is_active = True
    connection.save()
    assert notices(pbx) == [(ADMIN, TEXTS[lang]["callbacks_connected"], tag)]
