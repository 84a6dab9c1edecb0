"""A portal admin's Django admin shows only their portal, for EVERY model registered in the
admin: a model added later (SMS, another provider's settings) is covered by adding a row
factory to WORLD below, and this test fails until its admin declares `portal_path`."""

from collections.abc import Callable

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.forms import ModelChoiceField
from django.test import RequestFactory
from django.urls import reverse

from bitrixapp import outbox
from bitrixapp.admin_scope import OPERATORS_ONLY, PortalScoped
from bitrixapp.models import BitrixEvent, BitrixUser, Portal, PortalStaff
from sms.models import (
    SmsAccount,
    SmsDeliveryReport,
    SmsHandlerCall,
    SmsMessage,
    SmsSender,
    SmsStatusChange,
)
from telephony.models import Call, PbxConnection, PbxEvent, PbxExtension, PbxLine

pytestmark = pytest.mark.django_db


def _portal(name: str) -> Portal:
    return Portal.objects.create(
        member_id=name,
        domain=f"{name}.bitrix24.ru",
        client_endpoint=f"https://{name}.bitrix24.ru/rest/",
    )


def _telephony(portal: Portal) -> None:
    connection = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    PbxLine.objects.create(connection=connection, number="74950000000", line_number="74950000000")
    PbxExtension.objects.create(connection=connection, extension="101", user_id=1)
    call = Call.objects.create(portal=portal, connection=connection, call_key=f"k-{portal.pk}")
    PbxEvent.objects.create(portal=portal, connection=connection, call=call, source="events/call")


def _sms(portal: Portal) -> None:
    account = SmsAccount.objects.create(portal=portal, name="MTS")
    sender = SmsSender.objects.create(
        portal=portal, account=account, code=f"mts_{portal.pk}", name="MTS SMS", alpha_name="ACME"
    )
    message = SmsMessage.objects.create(
        portal=portal, account=account, sender=sender, b24_message_id=f"m-{portal.pk}"
    )
    SmsStatusChange.objects.create(message=message, status="queued", source="handler")
    SmsHandlerCall.objects.create(portal=portal, sender=sender, message=message, source="send")
    SmsDeliveryReport.objects.create(portal=portal, account=account, source="dlr")


# One factory per app: it makes at least one row of each of its registered models for a portal.
WORLD: list[Callable[[Portal], None]] = [
    lambda portal: outbox.enqueue(portal, "profile"),
    lambda portal: BitrixEvent.objects.create(portal=portal, source="ONAPPTEST"),
    lambda portal: BitrixUser.objects.create(portal=portal, user_id=1, name=f"Boss {portal}"),
    _telephony,
    _sms,
]


@pytest.fixture
def world():
    mine, theirs = _portal("mine"), _portal("theirs")
    for make in WORLD:
        make(mine)
        make(theirs)
    user = User.objects.create(username="b24-mine-1", is_staff=True)
    PortalStaff.objects.create(user=user, portal=mine, bitrix_user_id=1)
    return mine, theirs, user


def _scoped_admins():
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, PortalScoped) and model_admin.portal_path is not None, (
            f"{type(model_admin).__name__} ({model._meta.label}) must use "
            "bitrixapp.admin_scope.PortalScoped and declare portal_path"
        )
        for inline in model_admin.inlines:
            assert issubclass(inline, PortalScoped) and inline.portal_path is not None, (
                f"inline {inline.__name__} must declare portal_path"
            )
        yield model, model_admin


def _rows(model, path, portal):
    return model._default_manager.filter(**{path or "pk": portal.pk})


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_registered_model_is_isolated_between_portals(client, world):
    mine, theirs, user = world
    client.force_login(user)
    request = RequestFactory().get("/admin/")
    request.user = user
    for model, model_admin in _scoped_admins():
        label = model._meta.label
        if model_admin.portal_path == OPERATORS_ONLY:
            assert client.get(_url(model, "changelist")).status_code == 403, label
            continue
        own, foreign = (
            _rows(model, model_admin.portal_path, mine),
            _rows(model, model_admin.portal_path, theirs),
        )
        assert own.exists() and foreign.exists(), f"add a row factory for {label} to WORLD"
        listing = client.get(_url(model, "changelist"))
        assert listing.status_code == 200, label
        html = listing.content.decode()
        for row in own:
            assert _url(model, "change", row.pk) in html, label
        for row in foreign:
            assert _url(model, "change", row.pk) not in html, label
            for view in ("change", "delete", "history"):
                assert client.get(_url(model, view, row.pk)).status_code == 404, (label, view)
        # Lists, actions, "select all" and autocomplete all start from get_queryset.
        visible = model_admin.get_queryset(request)
        assert not visible.filter(pk__in=foreign.values("pk")).exists(), label
        _assert_choices_scoped(model_admin, request, own.first(), theirs, label)


def _assert_choices_scoped(model_admin, request, obj, theirs, label):
    form = model_admin.get_form(request, obj)
    for name, field in form.base_fields.items():
        if not isinstance(field, ModelChoiceField):
            continue
        related = field.queryset.model
        path = "" if related is Portal else model_admin.admin_site._registry[related].portal_path
        leaked = field.queryset.filter(pk__in=_rows(related, path, theirs).values("pk"))
        assert not leaked.exists(), f"{label}.{name} offers another portal's rows"


def test_tampered_form_values_and_actions_cannot_reach_another_portal(client, world):
    mine, theirs, user = world
    client.force_login(user)
    response = client.post(
        _url(PbxConnection, "add"),
        {
            "portal": theirs.pk,
            "name": "Hijack",
            "provider": "mango",
            "lines-TOTAL_FORMS": 0,
            "lines-INITIAL_FORMS": 0,
            "extensions-TOTAL_FORMS": 0,
            "extensions-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200  # the form again, with an error
    assert not PbxConnection.objects.filter(name="Hijack").exists()
    theirs_connection = PbxConnection.objects.get(portal=theirs)
    client.post(
        _url(PbxConnection, "changelist"),
        {"action": "delete_selected", "_selected_action": [theirs_connection.pk], "post": "yes"},
    )
    assert PbxConnection.objects.filter(pk=theirs_connection.pk).exists()


def test_superuser_sees_every_portal(admin_client, world):
    html = admin_client.get(_url(PbxConnection, "changelist")).content.decode()
    for connection in PbxConnection.objects.all():
        assert _url(PbxConnection, "change", connection.pk) in html


def test_a_login_linked_to_no_portal_sees_nothing(client, world):
    stranger = User.objects.create(username="stranger", is_staff=True)
    client.force_login(stranger)
    assert client.get(_url(PbxConnection, "changelist")).status_code == 403


def test_the_user_pickers_list_only_the_portals_own_bitrix24_users(client, world):
    """Extensions and the default user are picked by name from the synced user list: the
    list on a portal admin's page is that portal's alone (another portal's names never show)."""
    mine, theirs, user = world
    BitrixUser.objects.create(portal=mine, user_id=7, name="Мария Своя")
    BitrixUser.objects.create(portal=theirs, user_id=8, name="Пётр Чужой")
    client.force_login(user)
    connection = PbxConnection.objects.get(portal=mine)
    page = client.get(_url(PbxConnection, "change", connection.pk)).content.decode()
    assert "Мария Своя" in page and f"Boss {mine}" in page
    assert "Пётр Чужой" not in page and f"Boss {theirs}" not in page
