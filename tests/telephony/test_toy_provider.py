"""A new provider added with exactly the steps of docs/adding-a-provider.md: a module
(tests/telephony/toy_provider.py), one `providers.register` line (here, in a fixture) and
fixtures (tests/fixtures/toy/). It signs with a header and names its events in another, so
the provider interface has to carry headers to the provider, to storage and back."""

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bitrixapp import inbox
from telephony import providers
from telephony.models import PbxConnection, PbxEvent, PbxExtension, PbxLine
from tests.telephony.conftest import CLIENT_E164, LINE, Pbx

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "toy"
SECRET = "toy-secret"


def toy_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture
def toy_registered() -> Iterator[None]:
    providers.register("toy", "tests.telephony.toy_provider:Toy")  # the one registry line
    yield
    del providers.REGISTRY["toy"]
    providers.get.cache_clear()


@pytest.fixture
def toy(client, fake, mango, make_portal, toy_registered) -> Pbx:
    portal, remote = make_portal()
    remote.add_user(11, NAME="User 11", UF_PHONE_INNER="101")
    connection = PbxConnection.objects.create(
        portal=portal, name="Toy", provider="toy", credentials={"secret": SECRET}, default_user_id=1
    )
    PbxExtension.objects.create(connection=connection, extension="101", user_id=11)
    PbxLine.objects.create(connection=connection, number=LINE, line_number=LINE, name="Sales")
    return Pbx(client, fake, mango, portal, remote, connection)


def deliver(pbx: Pbx, name: str):
    data = toy_fixture(name)
    return pbx.send(data["path"], copy.deepcopy(data["json"]), data["headers"])


def test_a_call_through_the_toy_provider_reaches_bitrix24(toy):
    for name in ("ring", "answer", "hangup"):
        assert deliver(toy, name).status_code == 200
        toy.settle()
    assert toy.methods() == ["register", "finish"]
    register, finish = (params for _, params in toy.calls())
    assert (register["USER_ID"], register["PHONE_NUMBER"], register["LINE_NUMBER"]) == (
        11,
        CLIENT_E164,
        LINE,
    )
    assert (finish["USER_ID"], finish["DURATION"], finish["STATUS_CODE"]) == (11, 42, "200")


def test_the_headers_parse_needs_are_stored_and_used_again(toy):
    deliver(toy, "ring")
    row = PbxEvent.objects.get()
    assert row.headers["X-Toy-Event"] == "ring"
    toy.settle()
    row.refresh_from_db()
    assert row.state == PbxEvent.State.PROCESSED and row.events[0]["kind"] == "ringing"


def test_a_wrong_signature_header_is_403_and_nothing_is_stored(toy):
    data = toy_fixture("ring")
    toy.connection.credentials = {"secret": "another"}
    response = toy.send(data["path"], data["json"], data["headers"])
    assert response.status_code == 403 and "X-Toy-Signature" in response.json()["detail"]
    assert not PbxEvent.objects.exists()


def test_a_signed_body_the_parser_cannot_read_is_kept_as_rejected_and_recovers_after_a_fix(
    toy, monkeypatch
):
    response = deliver(toy, "ring__new_firmware")  # says call_id where the parser wants call
    assert response.status_code == 400 and response.json()["field"] == "call"
    row = PbxEvent.objects.get()
    assert (row.state, row.error) == (PbxEvent.State.REJECTED, "call is required")
    assert '"call_id": "T2"' in row.body

    # The parser learns the new firmware's name; "process again" parses the stored body anew.
    from tests.telephony.toy_provider import Toy

    monkeypatch.setitem(Toy.FIELDS, "call_key", ("call", "call_id"))
    inbox.reprocess([row])
    toy.settle()
    row.refresh_from_db()
    assert row.state == PbxEvent.State.PROCESSED and row.call.call_key == "T2"
    assert toy.methods() == ["register"]


def test_replay_signs_toy_fixtures_for_a_running_server(toy, live_server, settings):
    from django.core.management import call_command

    settings.APP_BASE_URL = live_server.url
    call_command(
        "replay_webhook",
        str(FIXTURES / "ring.json"),
        "--url",
        toy.connection.webhook_url,
        "--provider",
        "toy",
        "--credential",
        f"secret={SECRET}",
    )
    assert PbxEvent.objects.get().headers["X-Toy-Event"] == "ring"
