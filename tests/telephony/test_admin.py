"""Telephony admin: connections never show credentials, lines reach Bitrix24, call timelines."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bitrixapp import outbox
from bitrixapp.models import B24Command
from telephony.models import (
    Call,
    CallRecording,
    PbxConnection,
    PbxEvent,
    PbxExtension,
    PbxLine,
)
from tests.fakes.mango import signed_body

pytestmark = pytest.mark.django_db

KEY, SALT = "KEY-SECRET-1", "SALT-SECRET-2"
URL = "/admin/telephony/pbxconnection/"


@pytest.fixture
def connection(make_portal) -> PbxConnection:
    portal, _ = make_portal()
    return PbxConnection.objects.create(
        portal=portal,
        name="Moscow office",
        provider="mango",
        credentials={"api_key": KEY, "api_salt": SALT},
        last_error="webhook refused: sign does not match",
        last_error_at=timezone.now(),
    )


def form_data(connection: PbxConnection, lines=(), extensions=(), **changes) -> dict:
    """The change form as a browser posts it, with the connection's current values."""
    data = {
        "portal": connection.portal_id,
        "name": connection.name,
        "provider": connection.provider,
        "is_active": "on",
        "api_url": connection.api_url,
        "default_user_id": connection.default_user_id or "",
        "show_card": "on",
        "crm_create": "on",
        "missed_call_min_duration_s": connection.missed_call_min_duration_s,
        "credential_api_key": "",
        "credential_api_salt": "",
    }
    data.update(_formset("lines", lines, ("number", "line_number", "name", "crm_auto_create")))
    data.update(_formset("extensions", extensions, ("extension", "user_id")))
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def _formset(prefix: str, rows, fields) -> dict:
    """Rows are dicts of field values; "id" marks an existing row, "DELETE" deletes it."""
    initial = sum(1 for row in rows if row.get("id"))
    data = {
        f"{prefix}-TOTAL_FORMS": len(rows),
        f"{prefix}-INITIAL_FORMS": initial,
        f"{prefix}-MIN_NUM_FORMS": 0,
        f"{prefix}-MAX_NUM_FORMS": 1000,
    }
    for i, row in enumerate(rows):
        for name in (*fields, "id", "DELETE"):
            value = row.get(name)
            if value is True:
                value = "on"
            if value not in (None, False):
                data[f"{prefix}-{i}-{name}"] = value
    return data


def line_row(line: PbxLine, **changes) -> dict:
    row = {
        "id": line.pk,
        "number": line.number,
        "line_number": line.line_number,
        "name": line.name,
        "crm_auto_create": line.crm_auto_create,
    }
    return {**row, **changes}


def line_commands(portal) -> list[tuple[str, dict]]:
    rows = B24Command.objects.filter(portal=portal, method__startswith="telephony.externalLine")
    return [(c.method, c.params) for c in rows.order_by("pk")]


def test_connection_pages_show_the_webhook_url_and_error_but_never_credentials(
    admin_client, connection
):
    listing = admin_client.get(URL).content.decode()
    detail = admin_client.get(f"{URL}{connection.pk}/change/").content.decode()
    add = admin_client.get(f"{URL}add/").content.decode()
    assert "Moscow office" in listing
    assert connection.webhook_url in detail
    assert "sign does not match" in detail
    assert "stored; leave empty to keep it" in detail
    assert 'type="password"' in detail and 'name="credential_api_salt"' in detail
    for page in (listing, detail, add):
        assert KEY not in page and SALT not in page
    assert '<option value="mango"' in add


def test_saving_with_empty_credential_inputs_keeps_the_stored_values(admin_client, connection):
    answer = admin_client.post(
        f"{URL}{connection.pk}/change/", form_data(connection, default_user_id=7)
    )
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": KEY, "api_salt": SALT}
    assert connection.default_user_id == 7

    admin_client.post(
        f"{URL}{connection.pk}/change/", form_data(connection, credential_api_salt="NEW-SALT")
    )
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": KEY, "api_salt": "NEW-SALT"}


def test_a_new_connection_needs_the_providers_credential_keys(admin_client, make_portal):
    portal, _ = make_portal()
    draft = PbxConnection(portal=portal, name="New", provider="mango")
    answer = admin_client.post(f"{URL}add/", form_data(draft, credential_api_key="k"))
    page = answer.content.decode()
    assert answer.status_code == 200 and "Mango Office needs this key" in page
    assert 'value="k"' not in page  # a typed secret is not echoed back either
    assert not PbxConnection.objects.filter(name="New").exists()

    answer = admin_client.post(
        f"{URL}add/", form_data(draft, credential_api_key="k", credential_api_salt="s")
    )
    assert answer.status_code == 302
    assert PbxConnection.objects.get(name="New").credentials == {"api_key": "k", "api_salt": "s"}


def test_lines_saved_in_the_admin_are_registered_and_deleted_in_bitrix24(admin_client, connection):
    portal = connection.portal
    new = {"number": "+74951234567", "line_number": "74951234567", "name": "Sales"}
    new["crm_auto_create"] = True
    answer = admin_client.post(f"{URL}{connection.pk}/change/", form_data(connection, [new]))
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    add = "telephony.externalLine.add"
    assert line_commands(portal) == [
        (add, {"NUMBER": "74951234567", "NAME": "Sales", "CRM_AUTO_CREATE": "Y"})
    ]
    line = connection.lines.get()

    # Unchanged: nothing is sent again.
    admin_client.post(f"{URL}{connection.pk}/change/", form_data(connection, [line_row(line)]))
    assert len(line_commands(portal)) == 1

    B24Command.objects.all().delete()
    changed = line_row(line, line_number="74950000000", crm_auto_create=False)
    admin_client.post(f"{URL}{connection.pk}/change/", form_data(connection, [changed]))
    assert line_commands(portal) == [
        (add, {"NUMBER": "74950000000", "NAME": "Sales", "CRM_AUTO_CREATE": "N"}),
        ("telephony.externalLine.delete", {"NUMBER": "74951234567"}),
    ]

    B24Command.objects.all().delete()
    line.refresh_from_db()
    deleted = line_row(line, DELETE=True)
    admin_client.post(f"{URL}{connection.pk}/change/", form_data(connection, [deleted]))
    assert line_commands(portal) == [("telephony.externalLine.delete", {"NUMBER": "74950000000"})]
    assert not connection.lines.exists()


def test_deleting_a_connection_removes_its_lines_in_bitrix24(admin_client, connection):
    PbxLine.objects.create(connection=connection, number="1", line_number="74951234567")
    answer = admin_client.post(f"{URL}{connection.pk}/delete/", {"post": "yes"})
    assert answer.status_code == 302
    assert line_commands(connection.portal) == [
        ("telephony.externalLine.delete", {"NUMBER": "74951234567"})
    ]


def test_extensions_typed_in_the_admin_become_manual(admin_client, connection):
    row = PbxExtension.objects.create(
        connection=connection, extension="101", user_id=5, source=PbxExtension.Source.BITRIX
    )
    extensions = [{"id": row.pk, "extension": "101", "user_id": 9}]
    extensions.append({"extension": "102", "user_id": 8})
    admin_client.post(f"{URL}{connection.pk}/change/", form_data(connection, extensions=extensions))
    assert sorted(connection.extensions.values_list("extension", "user_id", "source")) == [
        ("101", 9, "manual"),
        ("102", 8, "manual"),
    ]


def test_fill_extensions_action_reads_bitrix24_users(admin_client, connection):
    admin_client.post(URL, {"action": "fill_extensions", "_selected_action": [connection.pk]})
    command = B24Command.objects.get(portal=connection.portal)
    assert (command.method, command.owner_key) == ("user.get", f"users:{connection.pk}")
    assert command.params == {"FILTER": {"ACTIVE": True}, "start": 0}


@pytest.fixture
def call(connection) -> Call:
    call = Call.objects.create(
        portal=connection.portal,
        connection=connection,
        call_key="E1",
        direction="inbound",
        client_number="79161234567",
        phase="finished",
        b24_call_id="externalCall.abc",
        status_code="200",
        duration=42,
    )
    t0 = timezone.now() - timedelta(minutes=5)
    body = signed_body(KEY, SALT, {"entry_id": "E1", "call_state": "Appeared"}).decode()
    PbxEvent.objects.create(
        connection=connection,
        call=call,
        portal=call.portal,
        source="events/call",
        dedupe_key="d1",
        body=body,
        events=[{"kind": "ringing", "call_key": "E1", "extension": "101"}],
        state="processed",
        received_at=t0,
    )
    register = outbox.enqueue(
        connection.portal,
        "telephony.externalcall.register",
        {"USER_ID": 11, "PHONE_NUMBER": "+79161234567"},
        owner_key=call.owner_key,
    )
    B24Command.objects.filter(pk=register.pk).update(
        created_at=t0 + timedelta(seconds=1),
        state="done",
        http_status=200,
        result={"CALL_ID": "externalCall.abc"},
    )
    finish = outbox.enqueue(
        connection.portal,
        "telephony.externalcall.finish",
        {"CALL_ID": "externalCall.abc", "DURATION": 42},
        owner_key=call.owner_key,
    )
    B24Command.objects.filter(pk=finish.pk).update(
        created_at=t0 + timedelta(seconds=50),
        state="failed",
        error_code="ERROR_CORE",
        error_description="Call is not found <b>",
    )
    PbxEvent.objects.create(
        connection=connection,
        call=call,
        portal=call.portal,
        source="events/summary",
        dedupe_key="d2",
        body="{}",
        events=[{"kind": "summary", "call_key": "E1"}],
        state="processed",
        received_at=t0 + timedelta(seconds=49),
    )
    outbox.enqueue(connection.portal, "profile", owner_key="call:999999")  # another call's
    CallRecording.objects.create(
        call=call,
        recording_id="REC1",
        state="failed",
        size=12345,
        content=b"ID3-AUDIO-BYTES",
        error="recording REC1 not available yet",
    )
    return call


def test_call_page_shows_a_merged_timeline_and_recordings(admin_client, call):
    whole = admin_client.get(f"/admin/telephony/call/{call.pk}/change/").content.decode()
    page = whole.split("Technical details")[1]  # the raw timeline (the journal comes first)
    order = [
        page.index("events/call"),
        page.index("telephony.externalcall.register"),
        page.index("events/summary"),
        page.index("telephony.externalcall.finish"),
    ]
    assert order == sorted(order)
    assert "+79161234567" in page and "externalCall.abc" in page  # params and result
    assert "ERROR_CORE Call is not found &lt;b&gt;" in page  # escaped
    assert "&quot;kind&quot;: &quot;ringing&quot;" in page  # normalized events
    assert "profile" not in page.split("PBX events and Bitrix24 commands")[1]
    assert "REC1" in whole and "12345" in whole and "not available yet" in whole
    assert "ID3-AUDIO-BYTES" not in whole
    assert KEY not in whole and SALT not in whole
    assert 'name="_save"' not in whole  # read-only


def test_call_list_filters_and_search(admin_client, call):
    listing = admin_client.get("/admin/telephony/call/?q=79161234567").content.decode()
    assert "externalCall.abc" in listing
    empty = admin_client.get("/admin/telephony/call/?q=70000000000").content.decode()
    assert "externalCall.abc" not in empty
    filtered = admin_client.get("/admin/telephony/call/?phase=finished&status_code=200")
    assert "externalCall.abc" in filtered.content.decode()


def test_calls_and_events_cannot_be_added(admin_client, connection):
    assert admin_client.get("/admin/telephony/call/add/").status_code == 403
    assert admin_client.get("/admin/telephony/pbxevent/add/").status_code == 403


def test_event_page_masks_credentials_in_the_stored_body(admin_client, client, call):
    from tests.fakes.mango import fixture

    PbxEvent.objects.all().delete()
    body = signed_body(KEY, SALT, fixture("call__appeared_inbound")["json"])
    url = f"/telephony/hooks/{call.connection.webhook_uuid}/events/call"
    assert (
        client.post(url, body, content_type="application/x-www-form-urlencoded").status_code == 200
    )
    event = PbxEvent.objects.get(source="events/call")
    PbxEvent.objects.filter(pk=event.pk).update(state="processed")
    listing = admin_client.get("/admin/telephony/pbxevent/?state=processed").content.decode()
    page = admin_client.get(f"/admin/telephony/pbxevent/{event.pk}/change/").content.decode()
    assert "events/call" in listing
    assert "vpbx_api_key=***" in page and "call_state" in page
    assert KEY not in page and KEY not in listing


def test_process_again_action_requeues_events(admin_client, call):
    event = PbxEvent.objects.get(source="events/call")
    admin_client.post(
        "/admin/telephony/pbxevent/", {"action": "reprocess", "_selected_action": [event.pk]}
    )
    assert PbxEvent.objects.get(pk=event.pk).state == "received"
