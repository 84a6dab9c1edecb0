"""Admin pages render for operators and never show token values."""

import pytest

from bitrixapp import outbox
from bitrixapp.models import B24Command, BitrixEvent, Portal

pytestmark = pytest.mark.django_db


@pytest.fixture
def portal():
    return Portal.objects.create(
        member_id="m1",
        domain="acme.bitrix24.ru",
        client_endpoint="https://acme.bitrix24.ru/rest/",
        access_token="ACCESS-SECRET",
        refresh_token="REFRESH-SECRET",
        application_token="APP-SECRET",
        last_error="token refresh refused: invalid_grant",
    )


def test_portal_pages_show_status_but_no_token_values(admin_client, portal):
    listing = admin_client.get("/admin/bitrixapp/portal/").content.decode()
    detail = admin_client.get(f"/admin/bitrixapp/portal/{portal.pk}/change/").content.decode()
    assert "acme.bitrix24.ru" in listing
    assert "invalid_grant" in detail and "access token: set" in detail
    for secret in ("ACCESS-SECRET", "REFRESH-SECRET", "APP-SECRET"):
        assert secret not in listing and secret not in detail


def test_command_log_shows_request_and_response(admin_client, portal):
    command = outbox.enqueue(portal, "telephony.externalCall.show", {"CALL_ID": "externalCall.x"})
    B24Command.objects.filter(pk=command.pk).update(
        state="failed", error_code="ERROR_CORE", result={"detail": "Call is not found"}
    )
    listing = admin_client.get("/admin/bitrixapp/b24command/?state__exact=failed").content.decode()
    assert "telephony.externalCall.show" in listing and "ERROR_CORE" in listing
    detail = admin_client.get(f"/admin/bitrixapp/b24command/{command.pk}/change/").content.decode()
    assert "externalCall.x" in detail and "Call is not found" in detail


def test_send_again_action_requeues_failed_commands(admin_client, portal):
    command = outbox.enqueue(portal, "profile")
    B24Command.objects.filter(pk=command.pk).update(state="failed")
    admin_client.post(
        "/admin/bitrixapp/b24command/", {"action": "retry_now", "_selected_action": [command.pk]}
    )
    assert B24Command.objects.get(pk=command.pk).state == "pending"


def test_event_list_and_reprocess_action(admin_client, portal):
    event = BitrixEvent.objects.create(
        portal=portal, source="ONCRMLEADADD", state="failed", body='{"data": {"ID": "1"}}'
    )
    assert "ONCRMLEADADD" in admin_client.get("/admin/bitrixapp/bitrixevent/").content.decode()
    admin_client.post(
        "/admin/bitrixapp/bitrixevent/", {"action": "reprocess", "_selected_action": [event.pk]}
    )
    assert BitrixEvent.objects.get(pk=event.pk).state == "received"
