"""A portal with a Mango connection wired to the live fakes, and helpers to play a call."""

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bitrixapp import inbox
from bitrixapp.models import Portal
from telephony import providers, tasks
from telephony.models import CallRecording, PbxConnection, PbxEvent, PbxExtension, PbxLine
from tests.conftest import drain
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal
from tests.fakes.mango import FIXTURE_EPOCH, FakeMango, fixture, shift_times

API_KEY, API_SALT = "mango-key", "mango-salt"
LINE = "74951234567"
CLIENT_E164 = "+79161234567"
TELEPHONY = "telephony."


@pytest.fixture(scope="session")
def mango_server() -> Iterator[FakeMango]:
    with FakeMango(API_KEY, API_SALT) as server:
        yield server


@pytest.fixture
def mango(mango_server: FakeMango) -> FakeMango:
    mango_server.reset()
    return mango_server


@dataclass
class Pbx:
    """One portal with one Mango connection, and what it takes to play calls through it."""

    client: Any
    fake: FakeBitrix24
    mango: FakeMango
    portal: Portal
    remote: FakePortal
    connection: PbxConnection
    shift: float = 0.0

    def deliver(self, name: str, entry: str = "E1", live: bool = True, **patch: Any) -> Any:
        """POST a fixture (dotted keys patch it, e.g. **{"to.extension": "102"}) as Mango would."""
        data = fixture(name)
        payload = shift_times(copy.deepcopy(data["json"]), self.shift if live else 0.0)
        if "entry_id" in payload:
            payload["entry_id"] = entry
        for dotted, value in patch.items():
            _set(payload, dotted.split("__"), value)
        return self.send(data["path"], payload, data.get("headers") or {})

    def send(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """POST a payload as the connection's PBX would: signed by its provider's
        `sign_fixture`, with the fixture's headers."""
        provider = providers.get(self.connection.provider)
        hook = provider.sign_fixture(self.connection.credentials, path, payload, headers or {})
        url = f"/telephony/hooks/{self.connection.webhook_uuid}/{hook.path}"
        return self.client.post(
            url, hook.body, content_type=hook.content_type, headers=hook.headers
        )

    def post(self, path: str, body: bytes, content_type: str = "application/x-www-form-urlencoded"):
        url = f"/telephony/hooks/{self.connection.webhook_uuid}/{path}"
        return self.client.post(url, body, content_type=content_type)

    def play(self, *names: str, **kwargs: Any) -> None:
        """Deliver fixtures one by one, each processed and sent before the next (a live call)."""
        for name in names:
            assert self.deliver(name, **kwargs).status_code == 200
            self.settle()

    def settle(self) -> None:
        """Do what the workers would: process stored events, download recordings, send."""
        for event_id in (
            PbxEvent.objects.filter(state="received").order_by("id").values_list("id", flat=True)
        ):
            inbox.process(PbxEvent, event_id)
        for recording in CallRecording.objects.filter(state="pending"):
            tasks.download_recording.apply(args=[recording.pk])
        drain(self.portal)
        for recording in CallRecording.objects.filter(state="downloaded").exclude(
            attach_command=None
        ):
            result = recording.attach_command.result or {}
            if "uploadUrl" in result:
                tasks.upload_recording(recording.pk, result["uploadUrl"], result["fieldName"])

    def calls(self) -> list[tuple[str, dict]]:
        """Telephony REST calls Bitrix24 executed, in order: (method, params)."""
        return [
            (c.method.removeprefix("telephony.externalCall."), _typed(c.params))
            for c in self.fake.calls
            if c.method.startswith(TELEPHONY) and c.ok and c.member_id == self.portal.member_id
        ]

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls()]


def _typed(params: dict) -> dict:
    """Inside a batch every value arrives as a string: compare numbers as numbers."""

    def num(v: Any) -> Any:
        if isinstance(v, list):
            return [num(x) for x in v]
        return int(v) if isinstance(v, str) and v.isdigit() and k in NUMERIC else v

    out = {}
    for k, v in params.items():
        out[k] = num(v)
    return out


NUMERIC = {"USER_ID", "TYPE", "SHOW", "CRM_CREATE", "DURATION"}


def _set(node: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


@pytest.fixture
def pbx(client, fake, mango, make_portal) -> Pbx:
    portal, remote = make_portal()
    for user_id, ext in ((11, "101"), (12, "102"), (13, "103"), (77, "177")):
        remote.add_user(user_id, NAME=f"User {user_id}", UF_PHONE_INNER=ext)
    connection = PbxConnection.objects.create(
        portal=portal,
        name="Moscow office",
        provider="mango",
        api_url=mango.api_url,
        credentials={"api_key": API_KEY, "api_salt": API_SALT},
        default_user_id=1,
    )
    for ext, user in (("101", 11), ("102", 12), ("103", 13)):
        PbxExtension.objects.create(connection=connection, extension=ext, user_id=user)
    PbxLine.objects.create(connection=connection, number=LINE, line_number=LINE, name="Sales")
    return Pbx(
        client, fake, mango, portal, remote, connection, shift=time.time() - FIXTURE_EPOCH - 10
    )
