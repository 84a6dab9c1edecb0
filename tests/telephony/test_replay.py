"""replay_webhook posts fixtures, signed like Mango, to a running server (Django's live_server)."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from telephony.models import PbxConnection, PbxEvent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mango"
CALL = str(FIXTURES / "call__appeared_inbound.json")
SUMMARY = str(FIXTURES / "summary__inbound_answered.json")
SIGNED = ("--credential", "api_key=k", "--credential", "api_salt=s")


@pytest.fixture
def connection(live_server, settings, make_portal) -> PbxConnection:
    settings.APP_BASE_URL = live_server.url  # so webhook_url points at the running server
    portal, _ = make_portal()
    return PbxConnection.objects.create(
        portal=portal, name="Mango", provider="mango", credentials={"api_key": "k", "api_salt": "s"}
    )


def replay(*args: str) -> str:
    out = io.StringIO()
    call_command("replay_webhook", *args, stdout=out)
    return out.getvalue()


def test_fixtures_are_posted_in_order_signed_and_stored(connection):
    out = replay(CALL, SUMMARY, "--url", connection.webhook_url, *SIGNED)
    events = list(PbxEvent.objects.filter(connection=connection).order_by("pk"))
    assert [e.source for e in events] == ["events/call", "events/summary"]
    assert [e.events[0]["kind"] for e in events] == ["ringing", "summary"]
    assert f"POST {connection.webhook_url}events/call: HTTP 200" in out
    assert f"POST {connection.webhook_url}events/summary: HTTP 200" in out
    assert json.loads(out.splitlines()[1]) == {"status": "accepted", "event_id": events[0].pk}

    again = replay(CALL, "--url", connection.webhook_url, *SIGNED)
    assert '"duplicate"' in again
    assert PbxEvent.objects.filter(connection=connection).count() == 2


def test_a_wrong_salt_is_refused_and_reported(connection):
    with pytest.raises(CommandError, match="1 of 1 not accepted"):
        replay(
            CALL,
            "--url",
            connection.webhook_url,
            "--credential",
            "api_key=k",
            "--credential",
            "api_salt=wrong",
        )
    assert not PbxEvent.objects.exists()
    connection.refresh_from_db()
    assert "sign does not match" in connection.last_error


def test_unsigned_posts_are_refused_by_a_mango_connection(connection):
    with pytest.raises(CommandError, match="not accepted"):
        replay(CALL, "--url", connection.webhook_url)
    assert not PbxEvent.objects.exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(CommandError, match="mango signs with api_salt"):
        replay(CALL, "--url", "http://127.0.0.1:9/", "--credential", "api_key=k")
    with pytest.raises(CommandError, match="KEY=VALUE"):
        replay(CALL, "--url", "http://127.0.0.1:9/", "--credential", "api_key")
    broken = tmp_path / "broken.json"
    broken.write_text('{"path": "events/call"}')
    with pytest.raises(CommandError, match="expected"):
        replay(str(broken), "--url", "http://127.0.0.1:9/")
    with pytest.raises(CommandError, match="cannot read"):
        replay(str(tmp_path / "missing.json"), "--url", "http://127.0.0.1:9/")


# --- MTT and the generic JSON webhook: signed as their PBX would sign ------------------------

ROOT = FIXTURES.parent


def json_connection(portal, provider: str, credentials: dict) -> PbxConnection:
    return PbxConnection.objects.create(
        portal=portal, name=provider, provider=provider, credentials=credentials
    )


@pytest.fixture
def portal(live_server, settings, make_portal):
    settings.APP_BASE_URL = live_server.url
    return make_portal()[0]


def test_mtt_fixtures_are_signed_with_the_shared_secret(portal):
    connection = json_connection(portal, "mtt", {"api_key": "k", "secret": "mtt-secret"})
    calls = [str(ROOT / "mtt" / name) for name in ("incoming_call.json", "end_call.json")]
    signed = ("--credential", "api_key=k", "--credential")
    out = replay(*calls, "--url", connection.webhook_url, *signed, "secret=mtt-secret")
    kinds = [e.events[0]["kind"] for e in PbxEvent.objects.order_by("pk")]
    assert kinds[0] == "ringing" and "summary" in kinds[1:] and out.count("HTTP 200") == 2
    with pytest.raises(CommandError, match="1 of 1 not accepted"):
        replay(calls[0], "--url", connection.webhook_url, *signed, "secret=wrong")


def test_the_generic_doc_replay_command_works_as_written(portal):
    """docs/generic-webhook.md §4, with its placeholders filled in."""
    connection = json_connection(portal, "generic", {"secret": "doc-secret"})
    doc = (ROOT.parents[1] / "docs" / "generic-webhook.md").read_text(encoding="utf-8")
    command = doc[doc.index("manage.py replay_webhook") :].split("```")[0]
    command = command.replace("<webhook URL>", connection.webhook_url)
    args = command.replace("<secret>", "doc-secret").replace("\\\n", " ").split()[2:]
    out = replay(*[str(ROOT.parents[1] / a) if a.startswith("tests/") else a for a in args])
    kinds = [e.events[0]["kind"] for e in PbxEvent.objects.order_by("pk")]
    assert kinds == ["ringing", "answered", "summary"] and out.count("HTTP 200") == 3
