"""The synced Bitrix24 user list and the pickers built on it."""

import pytest
from django.contrib.auth.models import User

from bitrixapp import users
from bitrixapp.models import BitrixUser, PortalStaff
from telephony.models import PbxConnection, PbxExtension
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_sync_reads_every_page_and_marks_users_gone_from_bitrix24_inactive(make_portal):
    portal, remote = make_portal()
    for user_id in range(2, 62):  # 61 users with the built-in admin: two pages
        remote.add_user(
            user_id, NAME=f"User{user_id}", LAST_NAME="Test", UF_PHONE_INNER=str(user_id)
        )
    BitrixUser.objects.create(portal=portal, user_id=999, name="Fired")
    users.sync(portal)
    drain(portal)
    assert BitrixUser.objects.filter(portal=portal, is_active=True).count() == 61
    assert str(BitrixUser.objects.get(portal=portal, user_id=5)) == "User5 Test (#5)"
    assert BitrixUser.objects.get(portal=portal, user_id=5).extension == "5"
    assert not BitrixUser.objects.get(portal=portal, user_id=999).is_active


def test_portal_admin_maps_an_extension_by_picking_a_name(client, make_portal):
    portal, _remote = make_portal()
    BitrixUser.objects.create(portal=portal, user_id=7, name="Olga Petrova")
    connection = PbxConnection.objects.create(
        portal=portal,
        name="Office",
        provider="mango",
        credentials={"api_key": "k", "api_salt": "s"},
    )
    login = User.objects.create(username="b24-admin", is_staff=True)
    PortalStaff.objects.create(user=login, portal=portal, bitrix_user_id=1)
    client.force_login(login)
    url = f"/admin/telephony/pbxconnection/{connection.pk}/change/"
    page = client.get(url).content.decode()
    assert '<option value="7">Olga Petrova (#7)</option>' in page
    form = {
        "portal": portal.pk,
        "name": "Office",
        "provider": "mango",
        "is_active": "on",
        "show_card": "on",
        "crm_create": "on",
        "missed_call_min_duration_s": 0,
        "default_user_id": 7,
        "lines-TOTAL_FORMS": 0,
        "lines-INITIAL_FORMS": 0,
        "extensions-TOTAL_FORMS": 1,
        "extensions-INITIAL_FORMS": 0,
        "extensions-0-extension": "101",
        "extensions-0-user_id": 7,
    }
    response = client.post(url, form)
    assert response.status_code == 302
    assert PbxExtension.objects.get(connection=connection).user_id == 7
    connection.refresh_from_db()
    assert connection.default_user_id == 7
    form.update({"extensions-0-extension": "102", "extensions-0-user_id": 8})
    refused = client.post(url, form).content.decode()  # 8 is nobody on this portal
    assert "Select a valid choice" in refused
