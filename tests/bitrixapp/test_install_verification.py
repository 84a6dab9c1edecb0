"""Installs are trusted only after the Bitrix24 auth server confirms their tokens.

Against the live Bitrix24 fake (its auth server and REST API); a second fake stands in for an
attacker's server, which must never hear from us.
"""

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import transaction

from bitrixapp import outbox
from bitrixapp.models import B24Command, Portal
from tests.conftest import drain
from tests.fakes.bitrix24 import FakeBitrix24, php_flatten

pytestmark = pytest.mark.django_db


class AttackerServer(FakeBitrix24):
    """Records every request it gets, whatever the path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def _serve(self, handler: Any) -> None:
        self.seen.append(handler.path)
        super()._serve(handler)


@pytest.fixture(scope="module")
def attacker():
    with AttackerServer() as server:
        yield server


@pytest.fixture
def victim(make_portal, attacker):
    attacker.seen.clear()
    portal, remote = make_portal(status=Portal.Status.ACTIVE)
    return portal, remote


def stored(portal: Portal) -> tuple:
    fresh = Portal.objects.get(pk=portal.pk)
    return (
        fresh.status,
        fresh.domain,
        fresh.client_endpoint,
        fresh.access_token,
        fresh.refresh_token,
        fresh.application_token,
    )


def forged_install(member_id: str, attacker: FakeBitrix24) -> dict[str, str]:
    auth = {
        "domain": attacker.domain,
        "client_endpoint": attacker.rest_url,
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "member_id": member_id,
        "application_token": "attacker-app-token",
        "access_token": "attacker-access",
        "refresh_token": "attacker-refresh",
        "expires_in": "3600",
        "scope": "telephony",
        "status": "L",
    }
    return dict(php_flatten({"event": "ONAPPINSTALL", "data": {"VERSION": "1"}, "auth": auth}))


def event_form(remote, name: str, app_token: str, **data: str) -> dict[str, str]:
    form = remote.event_payload(name, data, with_tokens=False)
    form["auth[application_token]"] = app_token
    return form


@pytest.mark.parametrize("url", ["/bitrix/install/", "/bitrix/events/"])
def test_forged_onappinstall_is_refused_and_changes_nothing(client, fake, attacker, victim, url):
    portal, remote = victim
    before = stored(portal)
    response = client.post(url, forged_install(portal.member_id, attacker))
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "install_not_verified"
    assert body["field"] == "auth[refresh_token]"
    assert "invalid_grant" in body["detail"]
    assert stored(portal) == before
    # The attacker's token signs nothing; the real one still does.
    forged = event_form(remote, "ONEXTERNALCALLSTART", "attacker-app-token", PHONE_NUMBER="+7")
    assert client.post("/bitrix/events/", forged).status_code == 403
    genuine = event_form(remote, "ONEXTERNALCALLSTART", remote.application_token)
    assert client.post("/bitrix/events/", genuine).status_code == 200
    uninstall = event_form(remote, "ONAPPUNINSTALL", "attacker-app-token", CLEAN="1")
    assert client.post("/bitrix/events/", uninstall).status_code == 403
    assert Portal.objects.get(pk=portal.pk).status == Portal.Status.ACTIVE
    # Work for the portal still goes to the real Bitrix24 and nowhere else.
    with transaction.atomic():
        outbox.enqueue(Portal.objects.get(pk=portal.pk), "profile")
    drain(portal)
    assert fake.methods(portal.member_id) == ["profile"]
    assert attacker.seen == []


def test_forged_install_frame_post_is_refused_and_changes_nothing(client, attacker, victim):
    portal, _remote = victim
    before = stored(portal)
    form = {
        "AUTH_ID": "attacker-access",
        "REFRESH_ID": "attacker-refresh",
        "AUTH_EXPIRES": "3600",
        "APPLICATION_TOKEN": "attacker-app-token",
        "member_id": portal.member_id,
        "status": "L",
    }
    response = client.post(f"/bitrix/install/?DOMAIN={attacker.domain}&PROTOCOL=0", form)
    assert response.status_code == 403
    assert response.json()["field"] == "REFRESH_ID"
    assert stored(portal) == before
    assert attacker.seen == []


def test_genuine_tokens_of_another_portal_are_refused(client, fake, victim):
    portal, _remote = victim
    before = stored(portal)
    evil = fake.add_portal("evil-portal")
    form = dict(php_flatten({"event": "ONAPPINSTALL", "auth": evil.auth_data()}))
    form["auth[member_id]"] = portal.member_id
    response = client.post("/bitrix/install/", form)
    assert response.status_code == 403
    assert response.json()["field"] == "auth[member_id]"
    assert "another portal" in response.json()["detail"]
    assert stored(portal) == before
    assert not Portal.objects.filter(member_id="evil-portal").exists()


def test_install_stores_what_the_auth_server_says(client, fake):
    remote = fake.add_portal("fresh1")
    posted = remote.frame_payload()
    # The frame claims another host; the auth server's client_endpoint decides.
    response = client.post("/bitrix/install/?DOMAIN=elsewhere.example.com&PROTOCOL=1", posted)
    assert response.status_code == 200, response.content
    portal = Portal.objects.get(member_id="fresh1")
    assert portal.client_endpoint == fake.rest_url
    assert portal.domain == fake.domain
    # The posted pair was traded for a new one: that is the pair we keep.
    assert (portal.access_token, portal.refresh_token) == (
        remote.access_token,
        remote.refresh_token,
    )
    assert portal.access_token != posted["AUTH_ID"]
    assert portal.installer_user_id == 1
    assert portal.application_token == remote.application_token
    assert [r["refresh_token"] for r in fake.oauth_requests] == [posted["REFRESH_ID"]]


def test_the_same_install_delivered_twice_is_accepted_once_verified(client, fake):
    remote = fake.add_portal("twice")
    form = dict(php_flatten({"event": "ONAPPINSTALL", "auth": remote.auth_data()}))
    assert client.post("/bitrix/install/", form).status_code == 200
    kept = stored(Portal.objects.get(member_id="twice"))
    # The second delivery's refresh token is spent (rotated) at the auth server by now.
    response = client.post("/bitrix/install/", form)
    assert response.status_code == 200, response.content
    assert stored(Portal.objects.get(member_id="twice")) == kept
    assert len(fake.oauth_requests) == 2


def test_genuine_reinstall_replaces_the_application_token(client, fake, victim):
    portal, remote = victim
    uninstall = event_form(remote, "ONAPPUNINSTALL", remote.application_token, CLEAN="0")
    assert client.post("/bitrix/events/", uninstall).status_code == 200
    remote.application_token = "reinstalled-app-token"
    form = dict(php_flatten({"event": "ONAPPINSTALL", "auth": remote.auth_data()}))
    response = client.post("/bitrix/install/", form)
    assert response.status_code == 200, response.content
    fresh = Portal.objects.get(pk=portal.pk)
    assert fresh.status == Portal.Status.ACTIVE
    assert fresh.application_token == "reinstalled-app-token"
    assert fresh.access_token == remote.access_token
    genuine = event_form(remote, "ONEXTERNALCALLSTART", "reinstalled-app-token")
    assert client.post("/bitrix/events/", genuine).status_code == 200


@pytest.mark.parametrize(("user_id", "allowed"), [(1, True), (5, False)])
def test_a_new_application_token_for_an_installed_portal_needs_an_admin(
    client, fake, victim, user_id, allowed
):
    """Any employee can get verified tokens of their own by opening the app; posting them to
    the install page with an application token of their choosing must not let them sign
    (forge) the portal's events. A reinstall by a portal admin does change the token."""
    portal, remote = victim
    remote.add_user(5, NAME="Employee")
    before = stored(portal)
    form = remote.frame_payload(session=remote.sign_in(user_id))
    form["APPLICATION_TOKEN"] = "chosen-by-the-poster"
    response = client.post(f"/bitrix/install/?DOMAIN={fake.domain}&PROTOCOL=0", form)
    if allowed:
        assert response.status_code == 200, response.content
        assert Portal.objects.get(pk=portal.pk).application_token == "chosen-by-the-poster"
        return
    assert response.status_code == 403
    assert response.json()["field"] == "APPLICATION_TOKEN"
    assert stored(portal) == before
    forged = event_form(remote, "ONAPPUNINSTALL", "chosen-by-the-poster", CLEAN="1")
    assert client.post("/bitrix/events/", forged).status_code == 403


def test_app_update_through_the_install_page_keeps_the_portal_working(client, fake, victim):
    portal, remote = victim
    query = f"?DOMAIN={fake.domain}&PROTOCOL=0"
    response = client.post("/bitrix/install/" + query, remote.frame_payload())
    assert response.status_code == 200
    fresh = Portal.objects.get(pk=portal.pk)
    assert fresh.application_token == remote.application_token
    assert fresh.refresh_token == remote.refresh_token
    assert B24Command.objects.filter(portal=portal, method="event.bind").count() == 3


def test_onappinstall_without_tokens_needs_the_stored_application_token(client, victim):
    portal, remote = victim
    before = stored(portal)
    update = dict(php_flatten({"event": "ONAPPINSTALL", "auth": remote.auth_data(False)}))
    response = client.post("/bitrix/install/", update)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "updated", "member_id": portal.member_id}
    assert B24Command.objects.filter(portal=portal, method="event.bind").count() == 3
    assert stored(portal) == before

    update["auth[application_token]"] = "forged"
    response = client.post("/bitrix/events/", update)
    assert response.status_code == 403
    assert response.json()["field"] == "auth[application_token]"
    assert stored(portal) == before


def test_onappinstall_without_tokens_cannot_install_a_new_portal(client, fake):
    remote = fake.add_portal("never-installed")
    form = dict(php_flatten({"event": "ONAPPINSTALL", "auth": remote.auth_data(False)}))
    response = client.post("/bitrix/install/", form)
    assert response.status_code == 400
    assert response.json()["field"] == "auth[refresh_token]"
    assert not Portal.objects.filter(member_id="never-installed").exists()


@pytest.mark.parametrize("mode", ["close", "500"])
def test_auth_server_down_is_503_and_nothing_is_stored(client, fake, victim, mode):
    portal, remote = victim
    before = stored(portal)
    fake.oauth_outage = mode
    newcomer = fake.add_portal("newcomer")
    for member in (remote, newcomer):
        remote_form = dict(php_flatten({"event": "ONAPPINSTALL", "auth": member.auth_data()}))
        remote_form["auth[application_token]"] = "whatever"
        response = client.post("/bitrix/install/", remote_form)
        assert response.status_code == 503
        assert response["Retry-After"] == "30"
        assert response.json()["error"] == "auth_server_unavailable"
    assert stored(portal) == before
    assert not Portal.objects.filter(member_id="newcomer").exists()
    # Once the auth server is back, the same install goes through.
    fake.oauth_outage = None
    form = dict(php_flatten({"event": "ONAPPINSTALL", "auth": newcomer.auth_data()}))
    assert client.post("/bitrix/install/", form).status_code == 200


# App page: reviving a portal that needs re-authorization ------------------------------------


def open_app_page(client, fake, remote, session):
    return client.post(
        f"/bitrix/app/?DOMAIN={fake.domain}&PROTOCOL=0&LANG=en",
        remote.frame_payload(session=session),
    )


def test_app_page_opened_by_an_admin_revives_the_portal(client, fake, make_portal):
    portal, remote = make_portal(status=Portal.Status.NEEDS_REAUTH, last_error="refused")
    admin = remote.sign_in(1)
    response = open_app_page(client, fake, remote, admin)
    assert response.status_code == 200
    assert b"Access restored" in response.content
    fresh = Portal.objects.get(pk=portal.pk)
    assert fresh.status == Portal.Status.ACTIVE
    assert fresh.last_error == ""
    assert (fresh.access_token, fresh.refresh_token) == (admin.access_token, admin.refresh_token)
    # Once for the page (who is this user, at the stored endpoint), once by revive() with the
    # tokens the auth server just confirmed.
    assert [c.method for c in fake.calls_of("user.admin")] == ["user.admin", "user.admin"]


def test_app_page_opened_by_a_non_admin_shows_status_and_stores_nothing(client, fake, make_portal):
    portal, remote = make_portal(status=Portal.Status.NEEDS_REAUTH, last_error="refused")
    remote.add_user(5, NAME="Employee")
    before = stored(portal)
    response = open_app_page(client, fake, remote, remote.sign_in(5))
    assert response.status_code == 200
    assert b"Access restored" not in response.content
    assert b"only a portal administrator can restore access" in response.content
    assert stored(portal) == before
    assert Portal.objects.get(pk=portal.pk).last_error == "refused"


def test_app_page_with_unverifiable_tokens_stores_nothing(client, fake, attacker, make_portal):
    attacker.seen.clear()
    portal, remote = make_portal(status=Portal.Status.NEEDS_REAUTH)
    before = stored(portal)
    form = remote.frame_payload() | {"AUTH_ID": "forged", "REFRESH_ID": "forged"}
    response = client.post(f"/bitrix/app/?DOMAIN={attacker.domain}&PROTOCOL=0", form)
    assert response.status_code == 200
    assert b"did not confirm" in response.content
    assert stored(portal) == before
    assert attacker.seen == [] and fake.calls_of("user.admin") == []


def test_app_page_of_an_active_portal_still_checks_the_application_token(client, fake, victim):
    _portal, remote = victim
    form = remote.frame_payload() | {"APPLICATION_TOKEN": "forged"}
    response = client.post(f"/bitrix/app/?DOMAIN={fake.domain}&PROTOCOL=0", form)
    assert response.status_code == 403
    assert fake.oauth_requests == []  # an active portal's page never spends tokens


# Hostile install input: a clear 400 naming the field, never a 500 -------------------------

LONG_LABEL = "a" * 64


def event_auth(**override: Any) -> dict[str, Any]:
    auth = {
        "domain": "acme.bitrix24.ru",
        "client_endpoint": "https://acme.bitrix24.ru/rest/",
        "member_id": "hostile",
        "application_token": "apptok",
        "access_token": "acc",
        "refresh_token": "ref",
        "expires_in": "3600",
        "scope": "telephony",
    }
    auth.update(override)
    return {"event": "ONAPPINSTALL", "auth": auth}


@pytest.mark.parametrize(
    "override, field",
    [
        ({"expires_in": str(10**17)}, "auth[expires_in]"),
        ({"expires_in": 10**17}, "auth[expires_in]"),
        ({"user_id": 1e20}, "auth[user_id]"),
        ({"user_id": str(10**20)}, "auth[user_id]"),
        ({"client_endpoint": "http://[x/"}, "auth[client_endpoint]"),
        ({"client_endpoint": "https://acme.ru/" + "r" * 300}, "auth[client_endpoint]"),
        ({"client_endpoint": f"https://{LONG_LABEL}.ru/rest/"}, "auth[client_endpoint]"),
        ({"client_endpoint": "https://acme.ru:99999/rest/"}, "auth[client_endpoint]"),
        ({"member_id": {"a": "b"}}, "auth[member_id]"),
        ({"member_id": "m" * 65}, "auth[member_id]"),
        ({"member_id": "m\x00"}, "auth[member_id]"),
        ({"domain": ["acme.bitrix24.ru"]}, "auth[domain]"),
        ({"domain": "x..y"}, "auth[domain]"),
        ({"access_token": "a\x00b"}, "auth[access_token]"),
        ({"application_token": ["x"]}, "auth[application_token]"),
        ({"scope": "s" * 501}, "auth[scope]"),
        ({"server_endpoint": "https://x.ru/" + "s" * 250}, "auth[server_endpoint]"),
    ],
)
def test_hostile_onappinstall_values_are_400_naming_the_field(client, fake, override, field):
    response = client.post(
        "/bitrix/install/", json.dumps(event_auth(**override)), content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["error"] == "invalid_request"
    assert not Portal.objects.exists()
    assert fake.oauth_requests == []  # refused before anything is sent anywhere


@pytest.mark.parametrize(
    "domain",
    [
        "x..y",
        ".acme.ru",
        "acme.ru.",
        f"{LONG_LABEL}.bitrix24.ru",
        ".".join(["abcdefghi"] * 26),  # 259 characters
        "-acme.ru",
        "acme.ru:0",
        "[::1]",
        "acme.ru/evil",
    ],
)
def test_install_frame_refuses_bad_hosts(client, fake, domain):
    form = {"AUTH_ID": "a", "REFRESH_ID": "r", "member_id": "hostile", "APPLICATION_TOKEN": "t"}
    response = client.post("/bitrix/install/?" + urlencode({"DOMAIN": domain}), form)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "DOMAIN"
    assert not Portal.objects.exists()


@pytest.mark.parametrize(
    "override, field",
    [
        ({"AUTH_EXPIRES": str(10**17)}, "AUTH_EXPIRES"),
        ({"member_id": "m\x00"}, "member_id"),
        ({"member_id": "m" * 65}, "member_id"),
        ({"APPLICATION_SCOPE": "s" * 501}, "APPLICATION_SCOPE"),
    ],
)
def test_hostile_install_frame_values_are_400_naming_the_field(client, fake, override, field):
    form = {"AUTH_ID": "a", "REFRESH_ID": "r", "member_id": "hostile", "APPLICATION_TOKEN": "t"}
    form.update(override)
    response = client.post(
        "/bitrix/install/?DOMAIN=acme.bitrix24.ru",
        urlencode(form),  # as Bitrix24 posts it (a raw NUL in multipart is refused as "body")
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not Portal.objects.exists()
    assert fake.oauth_requests == []
