"""The app page inside Bitrix24: who may see what, the one-time link into the admin, the
pages a person sees when opening the app's URLs in a browser."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from bitrixapp.models import AdminLoginLink, B24Command, PortalStaff
from telephony.models import PbxConnection

pytestmark = pytest.mark.django_db


def _open(client, portal, remote, session=None, lang="en", **overrides):
    query = f"DOMAIN={portal.domain}&PROTOCOL=1&LANG={lang}&APP_SID=x"
    return client.post(
        f"/bitrix/app/?{query}", {**remote.frame_payload(session=session), **overrides}
    )


@pytest.fixture
def portal_with_pbx(make_portal):
    portal, remote = make_portal()
    remote.add_user(7, NAME="Olga", LAST_NAME="Petrova")
    connection = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    return portal, remote, connection


def _token(response) -> str:
    html = response.content.decode()
    start = html.index('name="token" value="') + len('name="token" value="')
    return html[start : html.index('"', start)]


def test_admin_sees_checklist_urls_and_settings_button_framed_by_the_portal(
    client, portal_with_pbx
):
    portal, remote, connection = portal_with_pbx
    response = _open(client, portal, remote, remote.sign_in(1))
    html = response.content.decode()
    assert response.status_code == 200
    assert connection.webhook_url in html and "Open settings" in html
    assert "Paste the webhook URL into the PBX" in html
    assert response["Content-Security-Policy"] == f"frame-ancestors http://{portal.domain}"
    assert "X-Frame-Options" not in response
    # The user list is read for the pickers the first time an admin opens the app.
    assert B24Command.objects.filter(portal=portal, method="user.get").exists()


def test_employee_who_is_not_an_admin_sees_status_only(client, portal_with_pbx):
    portal, remote, connection = portal_with_pbx
    response = _open(client, portal, remote, remote.sign_in(7))
    html = response.content.decode()
    assert response.status_code == 200 and "Office" in html
    assert connection.webhook_url not in html and "Open settings" not in html
    assert not AdminLoginLink.objects.exists()


def test_wrong_application_token_is_refused_before_anything_is_asked(client, portal_with_pbx):
    portal, remote, _connection = portal_with_pbx
    response = _open(client, portal, remote, remote.sign_in(1), APPLICATION_TOKEN="forged")
    assert response.status_code == 403 and "APPLICATION_TOKEN" in response.json()["detail"]
    assert not AdminLoginLink.objects.exists()


def test_user_is_asked_of_the_stored_endpoint_never_one_from_the_request(client, portal_with_pbx):
    portal, remote, _connection = portal_with_pbx
    # The request names a portal that would vouch for the token (SERVER_ENDPOINT, DOMAIN),
    # but the stored endpoint is what is asked: here nothing answers there, so no admin.
    portal.client_endpoint = "http://127.0.0.1:9/rest/"
    portal.save()
    response = _open(client, portal, remote, remote.sign_in(1))
    assert response.status_code == 200 and "Open settings" not in response.content.decode()
    assert not AdminLoginLink.objects.exists()


def test_settings_link_logs_in_once_as_the_portals_admin(client, portal_with_pbx):
    portal, remote, _connection = portal_with_pbx
    token = _token(_open(client, portal, remote, remote.sign_in(1)))
    assert AdminLoginLink.objects.get().secret_hash not in token  # only a hash is stored
    response = client.post("/bitrix/admin-login/", {"token": token, "lang": "en"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    staff = PortalStaff.objects.get()
    assert (staff.portal, staff.bitrix_user_id) == (portal, 1)
    assert not staff.user.is_superuser and not staff.user.has_usable_password()
    assert client.get("/admin/").status_code == 200
    client.logout()
    assert client.post("/bitrix/admin-login/", {"token": token}).status_code == 403
    assert client.get("/admin/").status_code == 302  # not signed in: the spent link did nothing


def test_settings_link_reuses_the_login_and_refuses_expired_or_forged_tokens(
    client, portal_with_pbx
):
    portal, remote, _connection = portal_with_pbx
    first = _token(_open(client, portal, remote, remote.sign_in(1)))
    client.post("/bitrix/admin-login/", {"token": first})
    second = _token(_open(client, portal, remote, remote.sign_in(1)))
    link_id, _dot, secret = second.partition(".")
    assert client.post("/bitrix/admin-login/", {"token": f"{link_id}.x{secret}"}).status_code == 403
    AdminLoginLink.objects.filter(pk=link_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert client.post("/bitrix/admin-login/", {"token": second}).status_code == 403
    third = _token(_open(client, portal, remote, remote.sign_in(1)))
    assert client.post("/bitrix/admin-login/", {"token": third}).status_code == 302
    assert PortalStaff.objects.count() == 1


def test_app_page_speaks_bitrix24s_language(client, portal_with_pbx):
    portal, remote, _connection = portal_with_pbx
    html = _open(client, portal, remote, remote.sign_in(1), lang="ru").content.decode()
    assert "Открыть настройки" in html and 'lang="ru"' in html
    html = _open(client, portal, remote, remote.sign_in(1), lang="de").content.decode()
    assert "Open settings" in html and 'lang="en"' in html


def test_browser_get_of_app_urls_shows_a_page_other_clients_keep_json(client):
    for url in ("/bitrix/app/", "/bitrix/install/"):
        page = client.get(url, HTTP_ACCEPT="text/html,application/xhtml+xml")
        assert page.status_code == 200 and b"Open this from your Bitrix24 portal" in page.content
        api = client.get(url)
        assert api.status_code == 405 and api.json()["error"] == "method_not_allowed"
    home = client.get("/", HTTP_ACCEPT_LANGUAGE="ru")
    assert home.status_code == 200
    assert settings.APP_VERSION.encode() in home.content and "Версия".encode() in home.content


def test_admin_sees_open_problems_with_a_link_to_fix_each_employee_does_not(
    client, portal_with_pbx
):
    from bitrixapp import problems

    portal, remote, connection = portal_with_pbx
    fix = f"/admin/telephony/pbxconnection/{connection.pk}/change/"
    problems.report(
        portal, "webhook_bad_signature", connection.pk, fix_url=fix, connection=connection.name
    )
    admin_page = _open(client, portal, remote, remote.sign_in(1)).content.decode()
    assert "Open problems" in admin_page and f'href="{fix}"' in admin_page
    assert "Office" in admin_page
    employee_page = _open(client, portal, remote, remote.sign_in(7)).content.decode()
    assert "Open problems" not in employee_page


def test_sms_accounts_appear_on_the_app_page_only_once_a_portal_has_one(client, portal_with_pbx):
    from sms.models import SmsAccount, SmsSender

    portal, remote, _connection = portal_with_pbx
    assert "SMS gateway" not in _open(client, portal, remote, remote.sign_in(1)).content.decode()
    account = SmsAccount.objects.create(portal=portal, name="MTS Minsk")
    SmsSender.objects.create(
        portal=portal, account=account, code="mts_sms", name="MTS SMS", alpha_name="ACME"
    )
    html = _open(client, portal, remote, remote.sign_in(1)).content.decode()
    assert "MTS Minsk" in html and account.dlr_url in html
    assert "0 of 1 sender registered in Bitrix24" in html
