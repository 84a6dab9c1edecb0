"""Self-test of the Bitrix24 fake. Talks to it over real HTTP with `requests`; no Django."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests

from .bitrix24 import BitrixError, FakeBitrix24, FakePortal, php_flatten

CLIENT_ID, CLIENT_SECRET = "app.123", "s3cret"
PHONE = "+79001234567"


@pytest.fixture
def fake() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        yield server


@pytest.fixture
def portal(fake: FakeBitrix24) -> FakePortal:
    return fake.add_portal(member_id="m1", domain="acme.bitrix24.ru", plan="standard")


def rest(portal: FakePortal, method: str, token: str | None = None, **params: Any) -> Any:
    """POST a JSON REST call; returns the requests.Response."""
    body = {**params, "auth": token or portal.access_token}
    return requests.post(portal.client_endpoint + method, json=body, timeout=5)


def ok(portal: FakePortal, method: str, **params: Any) -> Any:
    response = rest(portal, method, **params)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def refresh(fake: FakeBitrix24, refresh_token: str, **overrides: str) -> requests.Response:
    params = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
        **overrides,
    }
    return requests.get(fake.oauth_url, params=params, timeout=5)


def register(portal: FakePortal, **extra: Any) -> dict[str, Any]:
    return ok(
        portal,
        "telephony.externalCall.register",
        USER_ID=1,
        PHONE_NUMBER=PHONE,
        TYPE=2,
        LINE_NUMBER="100",
        **extra,
    )


# OAuth ----------------------------------------------------------------------------------


def test_urls_and_portal_defaults(fake: FakeBitrix24, portal: FakePortal) -> None:
    assert fake.base_url == f"http://{fake.domain}"
    assert fake.oauth_url == fake.base_url + "/oauth/token/"
    assert portal.client_endpoint == fake.rest_url == fake.base_url + "/rest/"
    assert fake.portal("m1") is portal
    assert len({portal.access_token, portal.refresh_token, portal.application_token}) == 3
    assert fake.add_portal("m2").domain == fake.domain


def test_refresh_rotates_both_tokens(fake: FakeBitrix24, portal: FakePortal) -> None:
    old_access, old_refresh = portal.access_token, portal.refresh_token
    response = refresh(fake, old_refresh)
    assert response.status_code == 200
    data = response.json()
    assert data["access_token"] == portal.access_token != old_access
    assert data["refresh_token"] == portal.refresh_token != old_refresh
    assert data["expires_in"] == 3600 and isinstance(data["expires"], int)
    assert data["domain"] == "oauth.bitrix.info"
    assert data["client_endpoint"] == fake.rest_url
    assert data["member_id"] == "m1"
    # Both old tokens are dead now.
    reused = refresh(fake, old_refresh)
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    stale = rest(portal, "profile", token=old_access)
    assert (stale.status_code, stale.json()["error"]) == (401, "expired_token")
    assert ok(portal, "profile")["ADMIN"] is True
    assert len(fake.oauth_requests) == 2


def test_refresh_errors(fake: FakeBitrix24, portal: FakePortal) -> None:
    wrong = refresh(fake, portal.refresh_token, client_secret="nope")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    portal.revoke_refresh_token()
    revoked = refresh(fake, portal.refresh_token)
    assert revoked.status_code == 400
    assert revoked.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid refresh token",
    }
    # Form POST is accepted too.
    form = requests.post(fake.oauth_url, data={"grant_type": "refresh_token"}, timeout=5)
    assert form.json()["error"] == "invalid_client"


def test_expired_and_unknown_tokens(fake: FakeBitrix24, portal: FakePortal) -> None:
    portal.expire_access_token()
    expired = rest(portal, "app.info")
    assert expired.status_code == 401
    assert expired.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired.",
    }
    assert refresh(fake, portal.refresh_token).status_code == 200
    assert ok(portal, "app.info")["LICENSE_FAMILY"] == "project"
    unknown = rest(portal, "app.info", token="nope")
    assert (unknown.status_code, unknown.json()["error"]) == (401, "NO_AUTH_FOUND")
    assert fake.methods() == ["app.info"]
    assert [c.status for c in fake.calls_of("APP.INFO")] == [401, 200, 401]


def test_concurrent_refresh_only_one_wins(fake: FakeBitrix24, portal: FakePortal) -> None:
    fake.oauth_delay = 0.2
    token = portal.refresh_token
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(refresh(fake, token).status_code))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    assert fake.wait_for(lambda: len(fake.oauth_requests) == 2, timeout=2)
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 400]


# Request encodings ------------------------------------------------------------------------


def test_form_query_and_case_insensitive_methods(fake: FakeBitrix24, portal: FakePortal) -> None:
    portal.add_user(7, NAME="Olga", UF_PHONE_INNER="107")
    form = {"FILTER[UF_PHONE_INNER]": "107", "auth": portal.access_token}
    response = requests.post(fake.rest_url + "USER.GET.json", data=form, timeout=5)
    assert response.json()["result"][0]["NAME"] == "Olga"
    query = urlencode({"auth": portal.access_token, "ID": "7"})
    got = requests.get(f"{fake.rest_url}user.get?{query}", timeout=5).json()
    assert got["total"] == 1
    call = fake.calls_of("user.get")[0]
    assert call.method == "USER.GET" and call.params == {"FILTER": {"UF_PHONE_INNER": "107"}}
    bad = rest(portal, "no.such.method")
    assert (bad.status_code, bad.json()["error"]) == (404, "ERROR_METHOD_NOT_FOUND")


def test_user_get_pages_by_50(portal: FakePortal) -> None:
    for i in range(2, 121):
        portal.add_user(i, NAME=f"U{i}")
    first = rest(portal, "user.get").json()
    assert (len(first["result"]), first["total"], first["next"]) == (50, 120, 50)
    last = rest(portal, "user.get", start=100).json()
    assert len(last["result"]) == 20 and "next" not in last
    assert ok(portal, "user.get", FILTER={"ACTIVE": True, "NAME": "U5"})[0]["ID"] == "5"


# Limits -----------------------------------------------------------------------------------


def test_leaky_bucket_rejects_burst(fake: FakeBitrix24, portal: FakePortal) -> None:
    portal.bucket = (1.0, 5.0)
    statuses = [rest(portal, "profile").status_code for _ in range(10)]
    assert statuses[:6] == [200] * 6
    assert set(statuses[7:]) == {503}
    throttled = rest(portal, "profile").json()
    assert throttled["error"] == "QUERY_LIMIT_EXCEEDED"
    assert len(fake.calls) == statuses.count(200)  # throttled requests are not calls
    assert len(fake.throttled) == statuses.count(503) + 1
    assert len(fake.http_requests) == 11
    other = fake.add_portal("m2", plan="enterprise")
    assert rest(other, "profile").status_code == 200  # buckets are per portal
    fake.enforce_rate_limit = False
    assert rest(portal, "profile").status_code == 200


def test_default_buckets_follow_plan(fake: FakeBitrix24) -> None:
    standard = fake.add_portal("s")
    for _ in range(60):
        fake._admit(standard)
    assert 50 <= standard.bucket_level <= 52
    enterprise = fake.add_portal("e", plan="enterprise")
    assert all(fake._admit(enterprise) for _ in range(250))


def test_operating_limit(fake: FakeBitrix24, portal: FakePortal) -> None:
    now = [1_000_000.0]
    fake.clock = lambda: now[0]
    fake.operating_cost["user.get"] = 300.0
    first = rest(portal, "user.get").json()["time"]
    assert first["operating"] == 300.0 and first["operating_reset_at"] == 1_000_600
    assert rest(portal, "user.get").json()["time"]["operating"] == 600.0
    blocked = rest(portal, "user.get")
    assert (blocked.status_code, blocked.json()["error"]) == (429, "OPERATION_TIME_LIMIT")
    assert rest(portal, "profile").status_code == 200  # other methods keep working
    batch = ok(portal, "batch", cmd={"u": "user.get", "p": "profile"})
    assert batch["result_error"]["u"]["error"] == "OPERATION_TIME_LIMIT"
    assert batch["result_time"]["p"]["operating"] == 0.0
    now[0] += 601
    assert rest(portal, "user.get").status_code == 200


# Batch ------------------------------------------------------------------------------------


def test_batch_result_chain_and_errors(fake: FakeBitrix24, portal: FakePortal) -> None:
    portal.crm_entities[PHONE] = {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 5}
    cmd = {
        "line": "telephony.externalLine.add?NUMBER=100&NAME=Main",
        "reg": "telephony.externalCall.register?"
        + urlencode({"USER_ID": 1, "PHONE_NUMBER": PHONE, "TYPE": 2, "LINE_NUMBER": 100}),
        "fin": "telephony.externalCall.finish?CALL_ID=$result[reg][CALL_ID]&USER_ID=1&DURATION=7",
        "lost": "telephony.externalCall.finish?CALL_ID=$result[nope][CALL_ID]&USER_ID=1",
        "users": "user.get?FILTER[ID]=1",
        "me": "user.get?ID=" + quote("$result[users][0][ID]"),
        "nested": "batch?cmd[0]=profile",
    }
    result = ok(portal, "batch", halt=0, cmd=cmd)
    data, errors = result["result"], result["result_error"]
    assert data["fin"]["CALL_ID"] == data["reg"]["CALL_ID"]
    assert data["fin"]["CALL_STATUS"] == 1 and data["fin"]["CRM_ENTITY_ID"] == 5
    assert data["me"][0]["NAME"] == "Admin"
    assert errors["lost"]["error"] == "ERROR_CORE"
    assert errors["nested"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert result["result_total"] == {"users": 1, "me": 1}
    assert result["result_next"] == []  # empty PHP array
    assert set(result["result_time"]) == set(data)
    lost = fake.calls_of("telephony.externalCall.finish")[1]
    assert lost.via_batch and lost.batch_key == "lost"
    assert lost.params["CALL_ID"] == "$result[nope][CALL_ID]"  # unresolved stays literal
    assert fake.methods()[:3] == ["batch", "telephony.externalLine.add", cmd["reg"].split("?")[0]]


def test_batch_encodings_halt_and_limits(fake: FakeBitrix24, portal: FakePortal) -> None:
    listed = ok(portal, "batch", cmd=["profile", "app.info"])
    assert isinstance(listed["result"], list) and listed["result_error"] == []
    # Form-encoded: the command's own query is encoded twice.
    inner = urlencode({"FILTER[ID]": "1"})
    form = {"cmd[a]": f"user.get?{inner}", "cmd[b]": "nope.method", "cmd[c]": "profile"}
    form.update(halt="1", auth=portal.access_token)
    halted = requests.post(fake.rest_url + "batch", data=form, timeout=5).json()["result"]
    assert list(halted["result"]) == ["a"] and list(halted["result_error"]) == ["b"]
    too_many = rest(portal, "batch", cmd={str(i): "profile" for i in range(51)})
    assert (too_many.status_code, too_many.json()["error"]) == (400, "ERROR_BATCH_LENGTH_EXCEEDED")


# Failure injection ------------------------------------------------------------------------


def test_fail_next_and_custom_handlers(fake: FakeBitrix24, portal: FakePortal) -> None:
    other = fake.add_portal("m2")
    fake.fail_next("profile", times=2, member_id="m1")
    assert rest(other, "profile").status_code == 200
    assert [rest(portal, "profile").status_code for _ in range(3)] == [500, 500, 200]
    fake.fail_next("profile", "QUERY_LIMIT_EXCEEDED")
    assert rest(portal, "profile").status_code == 503  # documented status by default
    fake.fail_next("app.info", "ERROR_CORE", status=400, description="boom")
    batch = ok(portal, "batch", cmd={"a": "app.info", "b": "profile"})
    assert batch["result_error"] == {"a": {"error": "ERROR_CORE", "error_description": "boom"}}
    fake.fail_next("batch")
    assert rest(portal, "batch", cmd={"a": "profile"}).status_code == 500

    def handler(_portal: FakePortal, params: dict[str, Any]) -> Any:
        if params.get("X") == "bad":
            raise BitrixError("ACCESS_DENIED", "no", status=403)
        return {"echo": params}

    fake.set_handler("crm.item.get", handler)
    assert ok(portal, "crm.item.get", X="1") == {"echo": {"X": "1"}}
    assert rest(portal, "crm.item.get", X="bad").status_code == 403
    fake.reset()
    assert fake.calls == [] and fake.portal("m1") is portal


def test_delay_executes_before_answering(fake: FakeBitrix24, portal: FakePortal) -> None:
    fake.method_delay["profile"] = 0.5
    with pytest.raises(requests.ReadTimeout):
        requests.post(fake.rest_url + "profile", json={"auth": portal.access_token}, timeout=0.1)
    assert fake.methods() == ["profile"]  # executed even though the client gave up


def test_outage_modes(fake: FakeBitrix24, portal: FakePortal) -> None:
    fake.outage("500")
    assert rest(portal, "profile").status_code == 500
    assert refresh(fake, portal.refresh_token).json() == {
        "error": "INTERNAL_SERVER_ERROR",
        "error_description": "Internal server error",
    }
    fake.outage("close")
    with pytest.raises(requests.ConnectionError):
        rest(portal, "profile")
    fake.restore()
    assert rest(portal, "profile").status_code == 200
    assert [r["mode"] for r in fake.rejected] == ["500", "500", "close"]
    assert fake.rejected[0]["member_id"] == "m1" and fake.rejected[1]["method"] is None
    assert fake.methods() == ["profile"] and fake.oauth_requests == []


# Telephony --------------------------------------------------------------------------------


def test_register_dedup_quirk(fake: FakeBitrix24, portal: FakePortal) -> None:
    now = [2_000_000.0]
    fake.clock = lambda: now[0]
    first = register(portal, EXTERNAL_CALL_ID="pbx-1")
    assert first["CALL_ID"].startswith("externalCall.")
    assert first["CRM_ENTITY_ID"] is None and first["CRM_CREATED_ENTITIES"] == []
    assert register(portal, EXTERNAL_CALL_ID="pbx-1")["CALL_ID"] == first["CALL_ID"]
    assert register(portal, EXTERNAL_CALL_ID="pbx-2")["CALL_ID"] != first["CALL_ID"]
    now[0] += 31 * 60
    late = register(portal, EXTERNAL_CALL_ID="pbx-1")["CALL_ID"]
    assert late != first["CALL_ID"]
    ok(portal, "telephony.externalCall.finish", CALL_ID=late, USER_ID=1)
    assert register(portal, EXTERNAL_CALL_ID="pbx-1")["CALL_ID"] != late


def test_register_and_finish_errors(portal: FakePortal) -> None:
    def error(method: str, **params: Any) -> tuple[int, str, str]:
        body = rest(portal, method, **params).json()
        return rest(portal, method, **params).status_code, body["error"], body["error_description"]

    register_ = "telephony.externalCall.register"
    assert error(register_, PHONE_NUMBER=PHONE, TYPE=2)[2] == (
        "USER_ID or USER_PHONE_INNER should be set"
    )
    assert error(register_, USER_ID=1, PHONE_NUMBER=PHONE, TYPE=9)[2] == "Unknown TYPE"
    assert error(register_, USER_ID=1, PHONE_NUMBER="", TYPE=1)[2] == (
        "Unsupported phone number format"
    )
    assert error(register_, USER_ID=99, PHONE_NUMBER=PHONE, TYPE=1)[2] == (
        "User is not found or is not active"
    )
    call_id = register(portal, USER_PHONE_INNER="100")["CALL_ID"]
    finish = "telephony.externalCall.finish"
    assert error(finish, CALL_ID=123, USER_ID=1) == (
        400,
        "INVALID_ARGUMENT",
        "CALL_ID must be a string",
    )
    record = ok(portal, finish, CALL_ID=call_id, USER_ID=1, DURATION=0)
    assert (record["CALL_STATUS"], record["CALL_FAILED_CODE"], record["INCOMING"]) == (
        0,
        "304",
        "2",
    )
    assert error(finish, CALL_ID=call_id, USER_ID=1)[1:] == (
        "ERROR_CORE",
        "Call is not found (call should be registered prior to finishing)",
    )
    assert ok(portal, "telephony.externalCall.show", CALL_ID=call_id, USER_ID=[1, 2]) is False


def test_show_hide_and_search(portal: FakePortal) -> None:
    portal.add_user(3, NAME="Ivan", UF_PHONE_INNER="103")
    portal.crm_entities[PHONE] = {
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": 5,
        "ASSIGNED_BY_ID": 3,
    }
    found = ok(portal, "telephony.externalCall.searchCrmEntities", PHONE_NUMBER="8 900 123-45-67")
    assert found == []  # different digits (8 vs 7): no match
    found = ok(portal, "telephony.externalCall.searchCrmEntities", PHONE_NUMBER="79001234567")
    assert (
        found[0]["ASSIGNED_BY"]["ID"] == 3 and found[0]["ASSIGNED_BY"]["USER_PHONE_INNER"] == "103"
    )
    call = register(portal, SHOW=0)
    assert call["CRM_ENTITY_TYPE"] == "CONTACT"
    assert ok(portal, "telephony.externalCall.show", CALL_ID=call["CALL_ID"], USER_ID=[1, 3])
    assert ok(portal, "telephony.externalCall.hide", CALL_ID=call["CALL_ID"], USER_ID=1)
    assert portal.active_calls[call["CALL_ID"]]["SHOWN_TO"] == [3]


def test_external_lines(portal: FakePortal) -> None:
    assert ok(portal, "telephony.externalLine.add", NUMBER="100", NAME="Main") == {"ID": 1}
    dup = rest(portal, "telephony.externalLine.add", NUMBER="100").json()
    assert dup == {"error": "ERROR_CORE", "error_description": "Line already exists"}
    assert ok(portal, "telephony.externalLine.update", NUMBER="100", CRM_AUTO_CREATE="N") == {
        "ID": "1"
    }
    assert ok(portal, "telephony.externalLine.get") == [
        {"NUMBER": "100", "NAME": "Main", "CRM_AUTO_CREATE": "N"}
    ]
    assert ok(portal, "telephony.externalLine.delete", NUMBER="100") == []
    missing = rest(portal, "telephony.externalLine.delete", NUMBER="100").json()
    assert missing["error_description"] == "Could not find line with number 100"


def test_attach_record_modes(fake: FakeBitrix24, portal: FakePortal) -> None:
    attach = "telephony.externalCall.attachRecord"
    call_id = register(portal)["CALL_ID"]
    early = rest(portal, attach, CALL_ID=call_id, FILENAME="a.mp3").json()
    assert "not finished yet" in early["error_description"]
    ok(portal, "telephony.externalCall.finish", CALL_ID=call_id, USER_ID=1, DURATION=3)
    wrong = rest(portal, attach, CALL_ID=call_id, FILENAME="a.ogg", FILE_CONTENT="AAAA")
    assert wrong.json()["error_description"] == "Wrong file extension. Only wav and mp3 are allowed"
    garbage = rest(portal, attach, CALL_ID=call_id, FILENAME="a.mp3", FILE_CONTENT="%%%")
    assert "Base64 encoding is expected" in garbage.json()["error_description"]
    content = base64.b64encode(b"ID3 audio").decode()
    assert ok(portal, attach, CALL_ID=call_id, FILENAME="a.mp3", FILE_CONTENT=content) == {
        "FILE_ID": 1
    }
    url = "https://pbx.example/rec/b.wav"
    assert ok(portal, attach, CALL_ID=call_id, RECORD_URL=url) == {"FILE_ID": 2}
    upload = ok(portal, attach, CALL_ID=call_id, FILENAME="c.wav")
    assert upload["fieldName"] == "file" and upload["uploadUrl"].startswith(fake.base_url)
    sent = requests.post(upload["uploadUrl"], files={"file": ("c.wav", b"RIFF\r\n\x00")}, timeout=5)
    assert sent.status_code == 200
    records = portal.records[call_id]
    assert records[0]["content"] == b"ID3 audio" and records[1]["url"] == url
    assert records[2] == {"filename": "c.wav", "content": b"RIFF\r\n\x00", "file_id": 3}


# Events and messageservice ----------------------------------------------------------------


def test_event_bind_quirks(fake: FakeBitrix24, portal: FakePortal) -> None:
    hook = "https://app.example/events/"
    assert ok(portal, "event.bind", event="OnExternalCallStart", handler=hook) is True
    again = rest(portal, "event.bind", event="ONEXTERNALCALLSTART", handler=hook)
    assert again.status_code == 400
    assert again.json() == {"error": "", "error_description": "Handler already binded"}
    assert fake.calls_of("event.bind")[1].error == ""
    unknown = rest(portal, "event.bind", event="OnNothing", handler=hook).json()
    assert unknown["error"] == "ERROR_EVENT_NOT_FOUND"
    assert ok(portal, "event.get") == [
        {"event": "ONEXTERNALCALLSTART", "handler": hook, "auth_type": 0, "offline": 0}
    ]
    assert portal.bindings == [("ONEXTERNALCALLSTART", hook)]
    assert ok(portal, "event.unbind", event="ONEXTERNALCALLSTART", handler=hook) == {"count": 1}
    payload = portal.event_payload("OnAppInstall", {"VERSION": "1"})
    assert payload["auth[application_token]"] == portal.application_token
    assert payload["data[VERSION]"] == "1" and payload["event"] == "ONAPPINSTALL"
    assert dict(php_flatten({"a": [{"b": True}]})) == {"a[0][b]": "1"}


def test_messageservice(portal: FakePortal) -> None:
    sender = {"CODE": "acme_sms", "TYPE": "SMS", "HANDLER": "https://app/sms", "NAME": "Acme"}
    assert ok(portal, "messageservice.sender.add", **sender) is True
    dup = rest(portal, "messageservice.sender.add", **sender).json()
    assert dup["error"] == "ERROR_SENDER_ALREADY_INSTALLED"
    bad = rest(portal, "messageservice.sender.add", **{**sender, "CODE": "a b"}).json()
    assert bad == {
        "error": "ERROR_SENDER_VALIDATION_FAILURE",
        "error_description": "Wrong sender code!",
    }
    assert ok(portal, "messageservice.sender.update", CODE="acme_sms", NAME="New") is True
    assert portal.senders["acme_sms"]["NAME"] == "New"
    assert ok(portal, "messageservice.sender.list") == ["acme_sms"]
    status = "messageservice.message.status.update"
    assert ok(portal, status, CODE="acme_sms", MESSAGE_ID="m-1", STATUS="delivered") is True
    wrong = rest(portal, status, CODE="acme_sms", MESSAGE_ID="m-1", STATUS="read").json()
    assert wrong["error"] == "ERROR_MESSAGE_STATUS_INCORRECT"
    assert portal.message_statuses == [
        {"CODE": "acme_sms", "MESSAGE_ID": "m-1", "STATUS": "delivered"}
    ]
    assert ok(portal, "messageservice.sender.delete", CODE="acme_sms") is True
    assert portal.senders == {}


def test_answers_go_out_without_nagle_delay(fake: FakeBitrix24, portal: FakePortal) -> None:
    """TCP_NODELAY on the fake's sockets: a kept-alive client's next answer never waits for a
    delayed ACK, so benchmarks measure the app, not the fake."""
    with requests.Session() as session:
        body = {"auth": portal.access_token}
        assert session.post(portal.client_endpoint + "profile", json=body, timeout=5).ok
        with fake._server.sockets_lock:
            sockets = list(fake._server.open_sockets)
        assert sockets
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


def test_a_method_outside_the_installed_scope_is_refused(portal: FakePortal) -> None:
    notice = {"USER_ID": 1, "MESSAGE": "hello", "TAG": "t"}
    assert isinstance(ok(portal, "im.notify.system.add", **notice), int)
    portal.scope = "telephony,messageservice,crm,user_basic,placement"  # installed before `im`
    response = rest(portal, "im.notify.system.add", **notice)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert len(portal.notifications) == 1
    assert ok(portal, "profile")["ID"] == 1  # basic methods need no scope
    assert portal.frame_payload()["APPLICATION_SCOPE"] == portal.scope
