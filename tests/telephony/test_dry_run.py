"""Routing dry run: the admin's "simulate an incoming call" shows what the real call engine
would do with the connection's settings, and changes nothing anywhere."""

import pytest
from django.contrib.auth.models import User

from bitrixapp.models import B24Command, BitrixEvent, BitrixUser, PortalStaff
from telephony.models import Call, CallRecording, PbxConnection, PbxEvent
from tests.telephony.conftest import LINE

pytestmark = pytest.mark.django_db

CLIENT = "+79161234567"


def _url(connection: PbxConnection) -> str:
    return f"/admin/telephony/pbxconnection/{connection.pk}/dry-run/"


@pytest.fixture
def portal_admin(client, pbx):
    """The portal's own admin (as the one-time link from the app page makes them), with the
    Bitrix24 user list synced so that names show."""
    for user_id, name in ((1, "Anna Boss"), (11, "Ivan Petrov"), (12, "Olga Sidorova")):
        BitrixUser.objects.create(portal=pbx.portal, user_id=user_id, name=name)
    user = User.objects.create(username="b24-admin", is_staff=True)
    PortalStaff.objects.create(user=user, portal=pbx.portal, bitrix_user_id=1)
    client.force_login(user)
    return client


def _counts() -> dict[str, int]:
    models = (B24Command, Call, PbxEvent, CallRecording, BitrixEvent)
    return {m.__name__: m.objects.count() for m in models}


def _ask(client, connection, **values) -> str:
    data = {"client_number": CLIENT, "dialed_number": LINE, "talk_seconds": 60, **values}
    answer = client.post(_url(connection), data)
    assert answer.status_code == 200
    return answer.content.decode()


def test_the_form_opens_with_the_connections_line_and_first_extension(portal_admin, pbx):
    page = portal_admin.get(_url(pbx.connection)).content.decode()
    assert "Simulate an incoming call" in page
    assert f'value="{LINE}"' in page and 'value="101"' in page
    assert 'id="decision"' not in page


def test_a_missed_call_decision_without_side_effects(portal_admin, pbx):
    before, sent_before = _counts(), len(pbx.fake.calls)
    page = _ask(portal_admin, pbx.connection, ringing="101, 102")
    assert f"Bitrix24 line {LINE}" in page
    card_users = page.split('id="card-users">')[1].split("<")[0]
    assert card_users == "Ivan Petrov (#11), Olga Sidorova (#12)"
    assert "Logged as a missed call (nobody answered) for Anna Boss (#1)." in page
    assert "telephony.externalCall.register" in page and "telephony.externalCall.finish" in page
    assert _counts() == before  # no rows ...
    assert len(pbx.fake.calls) == sent_before  # ... and nothing reached Bitrix24


def test_the_dry_run_agrees_with_a_real_call(portal_admin, pbx):
    page = _ask(portal_admin, pbx.connection, ringing="101")
    pbx.play("call__appeared_inbound", "call__disconnected", "summary__inbound_missed")
    real = [(m, p.get("USER_ID"), p.get("STATUS_CODE")) for m, p in pbx.calls()]
    assert real == [("register", 11, None), ("hide", [11], None), ("finish", 1, "304")]
    steps = page.split("Step by step")[1]
    said = [
        "Register the call in Bitrix24 for Ivan Petrov (#11)",
        "Close the card for Ivan Petrov (#11)",
        "Finish the call for Anna Boss (#1): missed",
    ]
    assert [steps.index(s) for s in said] == sorted(steps.index(s) for s in said)


def test_an_edited_extension_mapping_shows_in_the_next_dry_run(portal_admin, pbx):
    pbx.connection.extensions.filter(extension="101").update(user_id=12)
    page = _ask(portal_admin, pbx.connection, ringing="101", answered_by="101", talk_seconds=30)
    assert "Logged as answered by Olga Sidorova (#12), 30 s." in page


def test_short_conversations_are_missed_per_the_connection(portal_admin, pbx):
    pbx.connection.missed_call_min_duration_s = 45
    pbx.connection.save()
    page = _ask(portal_admin, pbx.connection, ringing="101", answered_by="101", talk_seconds=30)
    assert "Logged as a missed call (the conversation was shorter than 45 s)" in page


def test_crm_owner_routing_is_described_not_asked(portal_admin, pbx):
    pbx.connection.route_to_responsible = True
    pbx.connection.save()
    before = _counts()
    page = _ask(portal_admin, pbx.connection, ringing="101")
    assert "would be asked who owns" in page and "does not ask Bitrix24" in page
    assert _counts() == before
    assert not any("searchCrmEntities" in c.method for c in pbx.fake.calls)


def test_an_unlisted_line_is_ignored_when_only_listed_lines_count(portal_admin, pbx):
    pbx.connection.only_mapped_lines = True
    pbx.connection.save()
    page = _ask(portal_admin, pbx.connection, dialed_number="74990000000", ringing="101")
    assert "not in the list: the call is ignored" in page
    assert "Not logged in Bitrix24." in page


def test_bad_input_is_explained_on_the_form(portal_admin, pbx):
    answer = portal_admin.post(_url(pbx.connection), {"client_number": "", "talk_seconds": "-1"})
    page = answer.content.decode()
    assert answer.status_code == 200 and 'id="decision"' not in page
    assert "This field is required." in page
    assert "greater than or equal to 0" in page


def test_another_portals_admin_gets_404(client, pbx, make_portal):
    other, _ = make_portal()
    user = User.objects.create(username="b24-other", is_staff=True)
    PortalStaff.objects.create(user=user, portal=other, bitrix_user_id=1)
    client.force_login(user)
    assert client.get(_url(pbx.connection)).status_code == 404
    assert client.post(_url(pbx.connection), {"client_number": CLIENT}).status_code == 404
