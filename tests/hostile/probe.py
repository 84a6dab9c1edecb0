"""Hostile requests, the world they are sent into, and what every answer must satisfy.

Used by the seeded cases (test_cases.py) and the property-based suite (test_properties.py).
Each request runs in a savepoint that is rolled back afterwards, so every example meets the
same world: one installed portal with a Mango connection, one uninstalled portal.
"""

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from django.db import transaction
from django.http import HttpResponse
from django.test import Client

from bitrixapp import inbox
from bitrixapp.models import BitrixEvent, Portal
from sms.models import SmsAccount, SmsDeliveryReport, SmsHandlerCall, SmsSender
from telephony.models import PbxConnection, PbxEvent
from tests.fakes.mango import signed_body

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

MEMBER_ID, APP_TOKEN = "m1", "apptok"
GONE_MEMBER_ID, GONE_APP_TOKEN = "m2", "apptok2"
API_KEY, API_SALT = "mango-key", "mango-salt"
HOOK = uuid.UUID("6c1e4a52-35a4-4b8e-9a43-0d3f9a1b2c3d")
HOOKS = f"/telephony/hooks/{HOOK}/"
SMS_SENDER_HOOK = uuid.UUID("0b5e1d7c-1c2a-4f7e-8d1a-5a6b7c8d9e0f")
SMS_ACCOUNT_HOOK = uuid.UUID("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
SMS_SEND = f"/sms/send/{SMS_SENDER_HOOK}/"
SMS_DLR = f"/sms/dlr/{SMS_ACCOUNT_HOOK}/"
MTT_SECRET, GENERIC_SECRET = "mtt-secret", "generic-secret"
MTT_HOOKS = "/telephony/hooks/3b7f0d8e-8a0c-4f57-b2f1-5d0e1c2a3b4c/"
GENERIC_HOOKS = "/telephony/hooks/9d2c4e61-7f3a-4c1b-8e5d-2a6b0c9f1e7d/"

# A Bitrix24 member_id is 32 hex digits; tests use short names. Either way: no garbage.
_MEMBER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Hostile:
    """One request: `environ` adds or overrides WSGI keys (CONTENT_LENGTH, HTTP_HOST...)."""

    path: str
    body: bytes = b""
    content_type: str = FORM
    method: str = "POST"
    environ: tuple[tuple[str, str], ...] = ()
    name: str = ""

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (
            f"Hostile({self.name or '-'}: {self.method} {self.path[:120]} "
            f"[{self.content_type[:60]}] {body!r} {self.environ!r})"
        )


# ------------------------------------------------------------------ building bodies


def form_body(pairs: list[tuple[str, str]]) -> bytes:
    """Form-encode like a browser; lone surrogates go out as their (invalid) UTF-8 bytes."""

    def enc(s: str) -> str:
        return quote(s.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{enc(k)}={enc(v)}" for k, v in pairs).encode("ascii")


class RawJson(str):
    """JSON text written as is: numbers json.dumps cannot produce (1e400) and deep nesting."""


def json_text(node: Any) -> str:
    """JSON like json.dumps, with RawJson leaves kept verbatim (lone surrogates are escaped)."""
    if isinstance(node, RawJson):
        return str(node)
    if isinstance(node, dict):
        items = (f"{json.dumps(str(k))}:{json_text(v)}" for k, v in node.items())
        return "{" + ",".join(items) + "}"
    if isinstance(node, list):
        return "[" + ",".join(json_text(v) for v in node) + "]"
    return json.dumps(node)


def json_body(node: Any) -> bytes:
    return json_text(node).encode("utf-8")


def event_form(name: str = "ONEXTERNALCALLSTART", **fields: str) -> list[tuple[str, str]]:
    """An event of the installed portal with the right application token."""
    return [
        ("event", name),
        ("auth[member_id]", MEMBER_ID),
        ("auth[application_token]", APP_TOKEN),
        ("auth[domain]", "acme.bitrix24.ru"),
        *fields.items(),
    ]


def onappinstall(member_id: str = "m9", **auth: str) -> list[tuple[str, str]]:
    values = {
        "member_id": member_id,
        "domain": "new.bitrix24.ru",
        "client_endpoint": "https://new.bitrix24.ru/rest/",
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "access_token": "acc",
        "refresh_token": "ref",
        "application_token": "app",
        "expires_in": "3600",
        "scope": "telephony,crm",
        "status": "L",
        **auth,
    }
    return [("event", "ONAPPINSTALL"), *((f"auth[{k}]", v) for k, v in values.items())]


def frame_form(member_id: str = "m9", **fields: str) -> list[tuple[str, str]]:
    values = {
        "AUTH_ID": "frame-acc",
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "frame-ref",
        "member_id": member_id,
        "status": "L",
        "APPLICATION_TOKEN": APP_TOKEN if member_id == MEMBER_ID else "app",
        **fields,
    }
    return list(values.items())


def mango_body(payload: Any, key: str = API_KEY, salt: str = API_SALT) -> bytes:
    """A form as Mango posts it, signed over exactly the JSON text sent."""
    text = payload if isinstance(payload, str) else json_text(payload)
    return signed_body(key, salt, text)


# ------------------------------------------------------------------ the world and one request


def make_world() -> None:
    installed = Portal.objects.create(
        member_id=MEMBER_ID,
        domain="acme.bitrix24.ru",
        client_endpoint="https://acme.bitrix24.ru/rest/",
        access_token="acc",
        refresh_token="ref",
        application_token=APP_TOKEN,
    )
    Portal.objects.create(
        member_id=GONE_MEMBER_ID,
        domain="gone.bitrix24.ru",
        client_endpoint="https://gone.bitrix24.ru/rest/",
        application_token=GONE_APP_TOKEN,
        status=Portal.Status.UNINSTALLED,
    )
    PbxConnection.objects.create(
        portal=installed,
        name="Office",
        provider="mango",
        webhook_uuid=HOOK,
        credentials={"api_key": API_KEY, "api_salt": API_SALT},
        default_user_id=1,
    )
    account = SmsAccount.objects.create(
        portal=installed,
        name="MTS",
        webhook_uuid=SMS_ACCOUNT_HOOK,
        credentials={"client_id": "1", "login": "l", "password": "p"},
    )
    SmsSender.objects.create(
        portal=installed,
        account=account,
        code="mts_sms_by",
        name="MTS SMS",
        alpha_name="ACME",
        kind=SmsSender.Kind.MARKETING,
        consent_field="UF_CRM_SMS_CONSENT",
        webhook_uuid=SMS_SENDER_HOOK,
    )
    for name, provider, hooks, credentials in (
        ("MTT", "mtt", MTT_HOOKS, {"api_key": "k", "secret": MTT_SECRET}),
        ("Generic", "generic", GENERIC_HOOKS, {"secret": GENERIC_SECRET}),
    ):
        PbxConnection.objects.create(
            portal=installed,
            name=name,
            provider=provider,
            webhook_uuid=uuid.UUID(hooks.split("/")[3]),
            credentials=credentials,
            default_user_id=1,
        )


@contextmanager
def rolled_back() -> Iterator[None]:
    """Everything inside is undone afterwards (on_commit callbacks never run: no broker)."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def send(request: Hostile) -> HttpResponse:
    """Send through Django's whole stack (middleware, URL routing, views) and check the world
    afterwards; raises AssertionError naming what went wrong."""
    with rolled_back():
        make_world()
        before = _high_water_marks()
        response = Client(raise_request_exception=True).generic(
            request.method,
            request.path,
            request.body,
            content_type=request.content_type,
            **dict(request.environ),
        )
        assert_answer(response)
        assert_rows(response, before)
    return response


# ------------------------------------------------------------------ what must hold


def assert_answer(response: HttpResponse) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.content[:500]!r}"
    if status < 400:
        return
    assert response["Content-Type"].startswith(JSON), f"{status} is not JSON: {response.content!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("field", ""), str), body


def assert_rows(response: HttpResponse, before: dict[str, int]) -> None:
    """No garbage portal; a refused request stored no event to act on; an accepted one has
    its effects (its PBX events process cleanly, an uninstall uninstalled)."""
    for portal in Portal.objects.all():
        assert_sound_portal(portal)
    accepted = 200 <= response.status_code < 300
    new_events = BitrixEvent.objects.filter(pk__gt=before["bitrix"])
    new_hooks = PbxEvent.objects.filter(pk__gt=before["pbx"])
    new_sms = [m.objects.filter(pk__gt=before[m.__name__]) for m in SMS_INBOXES]
    if not accepted:
        assert not new_events.filter(state=BitrixEvent.State.RECEIVED).exists()
        assert not new_hooks.filter(state=PbxEvent.State.RECEIVED).exists()
        assert not any(rows.filter(state="received").exists() for rows in new_sms)
        return
    for rows in new_sms:
        for row in rows:
            inbox.process(type(row), row.pk)
            row.refresh_from_db()
            assert row.state in ("processed", "ignored"), row.error
    for event in new_events.filter(source="ONAPPUNINSTALL"):
        event.portal.refresh_from_db()
        assert event.portal.status == Portal.Status.UNINSTALLED, "uninstall without effect"
    for row in new_hooks:
        inbox.process(PbxEvent, row.pk)  # a stored request that cannot be processed stays
        row.refresh_from_db()
        assert row.state in (PbxEvent.State.PROCESSED, PbxEvent.State.IGNORED), row.error


def assert_sound_portal(portal: Portal) -> None:
    portal.full_clean()  # max_length, URL syntax, choices
    assert _MEMBER_ID.match(portal.member_id), f"member_id {portal.member_id!r}"
    host = (portal.domain.rsplit(":", 1)[0] if ":" in portal.domain else portal.domain).lower()
    assert all(_LABEL.match(label) for label in host.split(".")), f"domain {portal.domain!r}"
    endpoint = urlsplit(portal.client_endpoint)
    assert endpoint.scheme in ("http", "https") and endpoint.hostname, portal.client_endpoint
    if portal.installer_user_id is not None:
        assert 0 < portal.installer_user_id < 2**31, portal.installer_user_id


def _high_water_marks() -> dict[str, int]:
    last_event = BitrixEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    last_hook = PbxEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    marks = {"bitrix": last_event or 0, "pbx": last_hook or 0}
    for model in SMS_INBOXES:
        marks[model.__name__] = (
            model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        )
    return marks


SMS_INBOXES = (SmsHandlerCall, SmsDeliveryReport)
