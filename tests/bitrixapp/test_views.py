"""Install, app page and events endpoints: good input, and every kind of bad input."""

import json

import pytest
from django.conf import settings

from bitrixapp import events, inbox
from bitrixapp.models import B24Command, BitrixEvent, Portal

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
ACME = "https://acme.bitrix24.ru/rest/"


def known_to_auth_server(fake, member_id, endpoint=ACME):
    """Make the Bitrix24 fake's auth server vouch for the literal tokens these tests post:
    the ONAPPINSTALL pair (acc-1/ref-1) and the frame POST pairs, for the portal at `endpoint`.
    The pairs do not rotate, so a test may post them more than once."""
    remote = fake.add_portal(member_id, access_token="acc-1", refresh_token="ref-1")
    remote.endpoint = endpoint
    remote.rotate_on_refresh = False
    remote.sign_in(1, "frame-acc", "frame-ref")
    remote.sign_in(1, "new-acc", "new-ref")
    return remote


@pytest.fixture(autouse=True)
def auth_server(fake):
    fake.remove_portal("race")
    known_to_auth_server(fake, "m1")
    return fake


def onappinstall(member_id="m1", app_token="apptok", endpoint="https://acme.bitrix24.ru/rest/"):
    return {
        "event": "ONAPPINSTALL",
        "data[VERSION]": "1",
        "data[ACTIVE]": "Y",
        "data[INSTALLED]": "Y",
        "data[LANGUAGE_ID]": "ru",
        "ts": "1773236988",
        "auth[access_token]": "acc-1",
        "auth[expires_in]": "3600",
        "auth[scope]": "telephony,crm",
        "auth[domain]": "acme.bitrix24.ru",
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[status]": "L",
        "auth[client_endpoint]": endpoint,
        "auth[member_id]": member_id,
        "auth[refresh_token]": "ref-1",
        "auth[application_token]": app_token,
    }


def frame_post(member_id="m1", **extra):
    form = {
        "AUTH_ID": "frame-acc",
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "frame-ref",
        "SERVER_ENDPOINT": "https://oauth.bitrix.info/rest/",
        "member_id": member_id,
        "status": "L",
        "PLACEMENT": "DEFAULT",
    }
    form.update(extra)
    return form


def setup_methods(portal):
    return list(
        B24Command.objects.filter(portal=portal).order_by("id").values_list("method", "params")
    )


def test_onappinstall_creates_the_portal_and_queues_event_binding(client):
    response = client.post("/bitrix/install/", onappinstall())
    assert response.status_code == 200, response.content
    portal = Portal.objects.get(member_id="m1")
    assert portal.status == Portal.Status.ACTIVE
    assert portal.client_endpoint == "https://acme.bitrix24.ru/rest/"
    assert (portal.access_token, portal.refresh_token) == ("acc-1", "ref-1")
    assert portal.application_token == "apptok"
    handler = f"{settings.APP_BASE_URL}/bitrix/events/"
    expected = []
    for event in ("ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART", "ONAPPUNINSTALL"):
        expected += [
            ("event.unbind", {"event": event, "handler": handler}),
            ("event.bind", {"event": event, "handler": handler}),
        ]
    expected.append(("app.info", {}))
    assert setup_methods(portal) == expected


def test_onappinstall_also_accepted_at_the_events_url(client):
    assert client.post("/bitrix/events/", onappinstall()).status_code == 200
    assert Portal.objects.filter(member_id="m1", status="active").exists()


def test_install_twice_queues_setup_once_while_the_first_is_pending(client):
    client.post("/bitrix/install/", onappinstall())
    client.post("/bitrix/install/", onappinstall())
    assert B24Command.objects.filter(method="event.bind").count() == 3


def test_install_frame_post_derives_the_endpoint_and_calls_install_finish(client):
    response = client.post(
        "/bitrix/install/?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=ru&APP_SID=x",
        frame_post(APPLICATION_TOKEN="frame-app-token"),
    )
    assert response.status_code == 200
    assert b"BX24.installFinish()" in response.content
    assert "X-Frame-Options" not in response.headers  # shown inside the Bitrix24 iframe
    portal = Portal.objects.get(member_id="m1")
    assert portal.client_endpoint == "https://acme.bitrix24.ru/rest/"
    assert portal.access_token == "frame-acc"
    assert portal.application_token == "frame-app-token"


def test_http_endpoints_are_refused_unless_allowed(client, settings):
    settings.BITRIX24_ALLOW_HTTP = False
    response = client.post("/bitrix/install/?DOMAIN=acme.bitrix24.ru&PROTOCOL=0", frame_post())
    assert response.status_code == 400
    assert response.json()["field"] == "PROTOCOL"
    response = client.post(
        "/bitrix/install/", onappinstall(endpoint="http://acme.bitrix24.ru/rest/")
    )
    assert response.status_code == 400
    assert response.json()["field"] == "auth[client_endpoint]"
    assert not Portal.objects.exists()


@pytest.mark.parametrize(
    "drop, field",
    [
        ("auth[member_id]", "auth[member_id]"),
        ("auth[refresh_token]", "auth[refresh_token]"),
        ("auth[client_endpoint]", "auth[client_endpoint]"),
    ],
)
def test_install_event_missing_fields_name_the_field(client, drop, field):
    form = onappinstall()
    del form[drop]
    response = client.post("/bitrix/install/", form)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": f"{field} is required",
        "field": field,
    }
    assert not Portal.objects.exists()


def test_install_with_neither_shape_is_400(client):
    response = client.post("/bitrix/install/", {"hello": "world"})
    assert response.status_code == 400
    assert "AUTH_ID" in response.json()["detail"]


def test_wrong_content_type_is_415_with_json(client):
    response = client.post("/bitrix/events/", "<xml/>", content_type="text/xml")
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_malformed_json_is_400(client):
    response = client.post("/bitrix/events/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"


def test_oversized_body_is_413(client, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 1000
    response = client.post("/bitrix/events/", {"event": "X", "pad": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.fixture
def installed(client):
    client.post("/bitrix/install/", onappinstall())
    return Portal.objects.get(member_id="m1")


def event(name="ONEXTERNALCALLSTART", member_id="m1", app_token="apptok", **data):
    form = {
        "event": name,
        "event_handler_id": "7",
        "ts": "1773236988",
        "auth[domain]": "acme.bitrix24.ru",
        "auth[client_endpoint]": "https://acme.bitrix24.ru/rest/",
        "auth[member_id]": member_id,
        "auth[application_token]": app_token,
        "auth[access_token]": "user-token-must-not-be-stored",
    }
    form.update({f"data[{k}]": v for k, v in data.items()})
    return form


def test_event_is_stored_without_secrets_and_answered(client, installed):
    response = client.post("/bitrix/events/", event(CALL_ID="externalCall.1", PHONE_NUMBER="+7495"))
    assert response.status_code == 200
    stored = BitrixEvent.objects.get(pk=response.json()["event_id"])
    assert stored.portal == installed
    assert stored.source == "ONEXTERNALCALLSTART"
    assert stored.payload["data"] == {"CALL_ID": "externalCall.1", "PHONE_NUMBER": "+7495"}
    assert "user-token-must-not-be-stored" not in json.dumps(stored.payload)
    assert "apptok" not in json.dumps(stored.payload)


def test_an_event_costs_its_acknowledgement_two_statements_and_one_decrypt(
    client, installed, monkeypatch
):
    """Issue 11: the portal by member_id (SQL written once, only the application token
    decrypted) and the INSERT; no transaction of its own around one statement."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bitrixapp import crypto

    decrypted = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: decrypted.append(1) or real(token))
    with CaptureQueriesContext(connection) as queries:
        assert client.post("/bitrix/events/", event(CALL_ID="c1")).status_code == 200
    sql = [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(sql) == 2, sql
    assert sql[0].startswith("SELECT") and sql[1].startswith('INSERT INTO "bitrixapp_bitrixevent"')
    assert len(decrypted) == 1


def test_event_with_wrong_application_token_is_403_and_not_stored(client, installed):
    response = client.post("/bitrix/events/", event(app_token="forged"))
    assert response.status_code == 403
    assert "application_token" in response.json()["detail"]
    assert not BitrixEvent.objects.exists()


def test_event_from_unknown_portal_is_404(client, installed):
    response = client.post("/bitrix/events/", event(member_id="nobody"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_event_missing_member_id_names_the_field(client, installed):
    form = event()
    del form["auth[member_id]"]
    response = client.post("/bitrix/events/", form)
    assert response.status_code == 400
    assert response.json()["field"] == "auth[member_id]"


def test_event_as_json_body_is_accepted(client, installed):
    body = {
        "event": "ONEXTERNALCALLBACKSTART",
        "data": {"PHONE_NUMBER": "+7"},
        "auth": {"member_id": "m1", "application_token": "apptok"},
    }
    response = client.post("/bitrix/events/", body, content_type="application/json")
    assert response.status_code == 200


def test_event_without_handler_is_kept_and_marked_ignored(client, installed):
    response = client.post("/bitrix/events/", event(name="ONCRMLEADADD"))
    assert response.status_code == 200
    inbox.process(BitrixEvent, response.json()["event_id"])
    assert BitrixEvent.objects.get().state == BitrixEvent.State.IGNORED


def test_event_handler_runs_once(client, installed):
    seen = []
    events.EVENT_HANDLERS["ONTESTEVENT"] = lambda e: seen.append(e.pk)
    try:
        event_id = client.post("/bitrix/events/", event(name="ONTESTEVENT")).json()["event_id"]
        inbox.process(BitrixEvent, event_id)
        inbox.process(BitrixEvent, event_id)  # a duplicate delivery of the task
    finally:
        del events.EVENT_HANDLERS["ONTESTEVENT"]
    assert seen == [event_id]
    assert BitrixEvent.objects.get().state == BitrixEvent.State.PROCESSED


def test_uninstall_stops_outgoing_work_and_keeps_data_without_clean(client, installed):
    assert B24Command.objects.filter(state="pending").count() == 7
    response = client.post("/bitrix/events/", event(name="ONAPPUNINSTALL", CLEAN="0"))
    assert response.status_code == 200
    portal = Portal.objects.get(pk=installed.pk)
    assert portal.status == Portal.Status.UNINSTALLED
    assert portal.access_token == "" and portal.refresh_token == ""
    assert not B24Command.objects.filter(state__in=("pending", "sending")).exists()
    assert B24Command.objects.filter(state="cancelled").count() == 7
    # Later events of that portal are refused clearly.
    response = client.post("/bitrix/events/", event())
    assert response.status_code == 410


def test_uninstall_with_clean_purges_the_portal(
    client, installed, django_capture_on_commit_callbacks
):
    from bitrixapp import tasks

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post("/bitrix/events/", event(name="ONAPPUNINSTALL", CLEAN="1"))
    assert Portal.objects.filter(pk=installed.pk).exists()
    tasks.purge_portal(installed.pk)  # what the queued task does
    assert not Portal.objects.filter(pk=installed.pk).exists()
    assert not B24Command.objects.exists() and not BitrixEvent.objects.exists()
    assert len(callbacks) >= 1


def test_forged_uninstall_is_refused(client, installed):
    response = client.post("/bitrix/events/", event(name="ONAPPUNINSTALL", app_token="x"))
    assert response.status_code == 403
    assert Portal.objects.get().status == Portal.Status.ACTIVE


def test_reinstall_after_uninstall_revives_the_portal(client, installed):
    client.post("/bitrix/events/", event(name="ONAPPUNINSTALL", CLEAN="0"))
    response = client.post("/bitrix/install/", onappinstall(app_token="newtok"))
    assert response.status_code == 200
    portal = Portal.objects.get()
    assert portal.status == Portal.Status.ACTIVE
    assert portal.application_token == "newtok"
    assert B24Command.objects.filter(state="pending", method="event.bind").count() == 3


def test_app_page_checks_the_application_token(client, installed):
    url = "/bitrix/app/?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=en"
    assert client.post(url, frame_post(APPLICATION_TOKEN="apptok")).status_code == 200
    response = client.post(url, frame_post(APPLICATION_TOKEN="wrong"))
    assert response.status_code == 403
    response = client.post(url, frame_post(member_id="unknown", APPLICATION_TOKEN="apptok"))
    assert response.status_code == 404


def test_app_page_revives_a_portal_that_needs_reauth(client, installed, auth_server):
    Portal.objects.filter(pk=installed.pk).update(
        status=Portal.Status.NEEDS_REAUTH, last_error="token refresh refused"
    )
    auth_server.portal("m1").endpoint = None  # user.admin is asked on a portal that answers
    url = "/bitrix/app/?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=en"
    response = client.post(
        url, frame_post(APPLICATION_TOKEN="apptok", AUTH_ID="new-acc", REFRESH_ID="new-ref")
    )
    assert response.status_code == 200
    assert b"Access restored" in response.content
    portal = Portal.objects.get()
    assert portal.status == Portal.Status.ACTIVE
    assert (portal.access_token, portal.refresh_token) == ("new-acc", "new-ref")
    assert portal.last_error == ""


def test_app_page_rebinds_events_after_an_app_update(client, installed):
    B24Command.objects.all().delete()
    Portal.objects.filter(pk=installed.pk).update(events_bound_version="0.0.1-old")
    url = "/bitrix/app/?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=en"
    client.post(url, frame_post(APPLICATION_TOKEN="apptok"))
    assert B24Command.objects.filter(method="event.bind").count() == 3


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_unknown_url_is_json_404(client):
    response = client.get("/nope/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_wrong_types_in_a_json_event_are_named(client, installed):
    body = {"event": "ONEXTERNALCALLSTART", "auth": {"member_id": ["m1"], "application_token": "x"}}
    response = client.post("/bitrix/events/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "auth[member_id] must be a string",
        "field": "auth[member_id]",
    }
    response = client.post("/bitrix/events/", [1, 2], content_type="application/json")
    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_frame_post_and_onappinstall_arriving_together_make_one_portal(auth_server):
    import threading

    from django.db import connection
    from django.test import Client

    auth_server.remove_portal("m1")  # the literal tokens now belong to the portal "race"
    known_to_auth_server(auth_server, "race")
    statuses = []

    def post(path, data, query=""):
        try:
            statuses.append(Client().post(path + query, data).status_code)
        finally:
            connection.close()

    frame = frame_post("race", APPLICATION_TOKEN="apptok")
    threads = [
        threading.Thread(target=post, args=("/bitrix/install/", onappinstall("race"))),
        threading.Thread(target=post, args=("/bitrix/install/", frame, "?DOMAIN=a.bitrix24.ru")),
        threading.Thread(target=post, args=("/bitrix/install/", onappinstall("race"))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200, 200, 200]
    assert Portal.objects.filter(member_id="race").count() == 1
