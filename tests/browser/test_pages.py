"""The portal admin's pages in a real browser: the app page as Bitrix24 posts it (ru and en),
its settings button into the portal-scoped admin, an extension mapping edited there and seen
by the routing dry run, the call journal, and a second portal's admin who sees none of it."""

import json
import re

import pytest

from bitrixapp.models import BitrixUser
from telephony.models import Call, PbxExtension
from tests.conftest import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def open_app_page(context, live_server, portal, remote, user_id: int = 1, lang: str = "en"):
    """What Bitrix24 does: POST the frame fields to the app URL inside the portal."""
    page = context.new_page()
    query = f"DOMAIN={portal.domain}&PROTOCOL=1&LANG={lang}&APP_SID=x"
    fields = remote.frame_payload(session=remote.sign_in(user_id))
    inputs = "".join(
        f"<input type=hidden name={json.dumps(k)} value={json.dumps(v)}>" for k, v in fields.items()
    )
    page.set_content(
        f'<form method="post" action="{live_server.url}/bitrix/app/?{query}">{inputs}</form>'
    )
    with page.expect_navigation():
        page.evaluate("document.forms[0].submit()")
    return page


def open_settings(app_page):
    """The "Open settings" button: the admin in a new tab, signed in."""
    with app_page.context.expect_page() as new_tab:
        app_page.click("#open-settings button")
    admin = new_tab.value
    admin.wait_for_load_state()
    return admin


@pytest.fixture
def named_users(pbx):
    """The portal's employees with names, read from Bitrix24 as the app page asks."""
    pbx.remote.add_user(11, NAME="Ivan", LAST_NAME="Petrov", UF_PHONE_INNER="101")
    pbx.remote.add_user(12, NAME="Olga", LAST_NAME="Sidorova", UF_PHONE_INNER="102")
    return pbx


def test_app_page_in_english_and_russian(browser_context, live_server, named_users, screenshot):
    pbx = named_users
    english = open_app_page(browser_context, live_server, pbx.portal, pbx.remote, lang="en")
    assert english.inner_text("h1") == "Telephony & SMS bridge"
    assert english.is_visible("text=Open settings")
    assert pbx.connection.webhook_url in english.content()
    screenshot(english, "app-page-en")
    russian = open_app_page(browser_context, live_server, pbx.portal, pbx.remote, lang="ru")
    assert russian.inner_text("h1") == "Мост телефонии и SMS"
    assert russian.is_visible("text=Открыть настройки")
    screenshot(russian, "app-page-ru")


def test_settings_open_the_admin_scoped_to_the_portal(
    browser_context, live_server, named_users, make_portal, screenshot
):
    pbx = named_users
    other, other_remote = make_portal()
    from telephony.models import PbxConnection

    PbxConnection.objects.create(portal=other, name="Other company PBX", provider="mango")
    app_page = open_app_page(browser_context, live_server, pbx.portal, pbx.remote)
    drain(pbx.portal)  # the user list the app page asked for: names in the pickers
    admin = open_settings(app_page)
    assert admin.url.startswith(f"{live_server.url}/admin/")
    screenshot(admin, "admin-home")
    admin.goto(f"{live_server.url}/admin/telephony/pbxconnection/")
    listing = admin.inner_text("#result_list")
    assert "Moscow office" in listing and "Other company PBX" not in listing
    admin.goto(f"{live_server.url}/admin/telephony/pbxconnection/{pbx.connection.pk}/change/")
    assert admin.is_visible("text=Create a lead for unknown numbers")
    assert not admin.is_visible("text=Last error")  # no error, no empty block
    screenshot(admin, "admin-connection")


def test_an_edited_extension_is_saved_and_used_by_the_dry_run(
    browser_context, live_server, named_users, make_portal, screenshot, request
):
    pbx = named_users
    app_page = open_app_page(browser_context, live_server, pbx.portal, pbx.remote)
    drain(pbx.portal)  # the user list the app page asked for arrives: names in the pickers
    assert BitrixUser.objects.filter(portal=pbx.portal, name="Olga Sidorova").exists()
    admin = open_settings(app_page)
    admin.goto(f"{live_server.url}/admin/telephony/pbxconnection/{pbx.connection.pk}/change/")
    row = PbxExtension.objects.filter(connection=pbx.connection).order_by("pk")
    index = [e.extension for e in row].index("101")
    admin.select_option(f"select[name='extensions-{index}-user_id']", label="Olga Sidorova (#12)")
    with admin.expect_navigation():
        admin.click("input[name='_continue']")
    assert admin.is_visible("text=was changed successfully")
    assert PbxExtension.objects.get(connection=pbx.connection, extension="101").user_id == 12

    with admin.expect_navigation():
        admin.click("text=Simulate an incoming call")
    admin.fill("input[name='ringing']", "101")
    with admin.expect_navigation():
        admin.click("input[type='submit']")
    assert admin.inner_text("#card-users") == "Olga Sidorova (#12)"
    assert "missed call (nobody answered)" in admin.inner_text("#outcome")
    screenshot(admin, "dry-run")

    # A second portal's admin, signed in the same way, sees none of it.
    other, other_remote = make_portal()
    other_browser = browser_context.browser.new_context()  # another person: own cookies
    request.addfinalizer(other_browser.close)
    other_admin = open_settings(open_app_page(other_browser, live_server, other, other_remote))
    for path in ("change/", "dry-run/"):
        url = f"{live_server.url}/admin/telephony/pbxconnection/{pbx.connection.pk}/{path}"
        assert other_admin.goto(url).status == 404
    other_admin.goto(f"{live_server.url}/admin/telephony/pbxconnection/")
    assert "Moscow office" not in other_admin.content()


def test_call_journal_page(browser_context, live_server, named_users, screenshot):
    pbx = named_users
    app_page = open_app_page(browser_context, live_server, pbx.portal, pbx.remote)
    drain(pbx.portal)
    pbx.play("call__appeared_inbound", "call__disconnected", "summary__inbound_missed")
    admin = open_settings(app_page)
    admin.goto(f"{live_server.url}/admin/telephony/call/{Call.objects.get().pk}/change/")
    verdict = admin.inner_text(".call-verdict")
    assert re.search(r"The card was opened for Ivan Petrov \(#11\)", verdict)
    assert admin.is_visible("text=Extension 101 rings")
    screenshot(admin, "call-journal")
