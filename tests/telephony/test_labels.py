"""Every field the admin shows has a human label and help text, in English and Russian; the
add form has no empty "Last error" block."""

import pytest
from django.contrib import admin
from django.db import models
from django.utils import translation
from django.utils.functional import Promise

from telephony.admin import PbxConnectionForm, PbxExtensionInline, PbxLineInline
from telephony.models import PbxConnection, PbxExtension, PbxLine

pytestmark = pytest.mark.django_db

URL = "/admin/telephony/pbxconnection/"
RAW = (">api_key", "Crm create", "Missed call min duration s", "Pbx connections")


def _shown_fields():
    for model in admin.site._registry:
        if model._meta.app_label not in ("telephony", "bitrixapp", "sms"):
            continue
        for field in model._meta.get_fields():
            if isinstance(field, models.Field) and field.name != "id":
                yield model, field


def _cyrillic(text) -> bool:
    return any("\u0430" <= ch <= "\u044f" for ch in str(text).lower())  # Cyrillic a..ya


def test_every_field_has_a_translatable_human_label():
    missing = []
    for model, field in _shown_fields():
        where = f"{model._meta.label}.{field.name}"
        if not isinstance(field.verbose_name, Promise):
            missing.append(f"{where} needs verbose_name=_(...)")
            continue
        with translation.override("ru"):
            if not _cyrillic(field.verbose_name):
                missing.append(f"{where}: no Russian label")
            if field.help_text and not _cyrillic(field.help_text):
                missing.append(f"{where}: help text not in Russian")
    assert missing == []


def test_every_setting_an_admin_edits_has_help_text():
    edited = {
        PbxConnection: PbxConnectionForm.Meta.fields,
        PbxLine: PbxLineInline.fields,
        PbxExtension: PbxExtensionInline.fields,
    }
    for model, names in edited.items():
        for name in names:
            field = model._meta.get_field(name)
            if name not in ("portal", "name", "provider"):  # plain enough on their own
                assert field.help_text, f"{model._meta.label}.{name} needs help_text"


def test_every_model_and_app_has_a_russian_name():
    with translation.override("ru"):
        for model, _field in _shown_fields():
            assert _cyrillic(model._meta.verbose_name_plural), model._meta.label
            assert _cyrillic(model._meta.app_config.verbose_name), model._meta.app_label


def test_the_connection_pages_speak_in_words(admin_client, make_portal):
    portal, _ = make_portal()
    add = admin_client.get(f"{URL}add/").content.decode()
    for raw in RAW:
        assert raw not in add
    assert "Create a lead for unknown numbers" in add and "PBX connections" in add
    assert "Last error" not in add  # nothing to show before the first error
    connection = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    assert "Last error" not in admin_client.get(f"{URL}{connection.pk}/change/").content.decode()
    connection.record_error("webhook refused: sign does not match")
    page = admin_client.get(f"{URL}{connection.pk}/change/").content.decode()
    assert "Last error" in page and "sign does not match" in page


def test_the_connection_page_in_russian(admin_client, make_portal):
    make_portal()
    page = admin_client.get(f"{URL}add/", headers={"accept-language": "ru"}).content.decode()
    assert "Создавать лид для неизвестных номеров" in page
    assert "Подключения АТС" in page  # noqa: RUF001 (Russian on purpose)
    assert "Ключ API" in page


def test_validation_errors_name_the_fields_in_words(admin_client, make_portal):
    from tests.telephony.test_admin import form_data

    portal, _ = make_portal()
    connection = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    twice = [{"extension": "101", "user_id": 5}, {"extension": "101", "user_id": 6}]
    data = form_data(connection, extensions=twice, api_url="not a url")
    page = admin_client.post(f"{URL}{connection.pk}/change/", data).content.decode()
    assert "Each extension may be listed only once." in page
    assert "Enter a web address such as https://app.mango-office.ru" in page
    assert "duplicate data for extension" not in page
