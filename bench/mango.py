"""Mango Office webhooks for the telephony benchmarks: a connection and signed event bodies.

A benchmark gets a `PbxConnection` (provider "mango", credentials {"api_key", "api_salt"})
on a portal, then builds webhook bodies from tests/fixtures/mango/*.json exactly as Mango
posts them (`vpbx_api_key`, `sign`, `json`; see `tests.fakes.mango.signed_body`). Each call
gets its own entry_id and leg call_id, so no two bodies are duplicates, and the fixtures'
clock is moved to the call's start time: live calls must carry current timestamps or the
call engine treats them as late (registered with SHOW=0, no card).

Import only after `bench.env.configure()` (uses Django models).
"""

import copy
import http.client
import secrets
import time
from dataclasses import dataclass

from bitrixapp.models import Portal
from telephony.models import PbxConnection, PbxExtension
from tests.fakes.mango import FIXTURE_EPOCH, fixture, shift_times, signed_body

API_KEY, API_SALT = "bench-mango-key", "bench-mango-salt"
HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Forwarded-Proto": "https",  # as behind the TLS proxy (DEBUG=0 redirects plain HTTP)
}

# One complete answered inbound call (Appeared, Connected, Disconnected, then the summary).
RINGING = "call__appeared_inbound"
ANSWERED_CALL = (RINGING, "call__connected", "call__disconnected", "summary__inbound_answered")


@dataclass(frozen=True)
class Webhook:
    """One signed notification: POST `body` to the connection's URL + `path`."""

    path: str  # e.g. "events/call"
    body: bytes
    entry_id: str


def mango_connection(portal: Portal, extensions: dict[str, int]) -> PbxConnection:
    """A Mango connection of `portal` with extension -> Bitrix24 user mappings (default user 1)."""
    connection = PbxConnection.objects.create(
        portal=portal,
        name="Bench office",
        provider="mango",
        credentials={"api_key": API_KEY, "api_salt": API_SALT},
        default_user_id=1,
    )
    for extension, user_id in extensions.items():
        PbxExtension.objects.create(connection=connection, extension=extension, user_id=user_id)
    return connection


def hook_path(connection: PbxConnection) -> str:
    """The URL path Mango posts to, without the event path (`events/call` etc.)."""
    return f"/telephony/hooks/{connection.webhook_uuid}/"


def external_call_id(connection: PbxConnection, entry_id: str) -> str:
    """EXTERNAL_CALL_ID the bridge registers a call with (telephony.pipeline.policy_of)."""
    return f"{connection.webhook_uuid.hex[:12]}:{entry_id}"


def new_entry_id(tag: str, n: int) -> str:
    """A unique Mango entry_id (call id): random per benchmark run, numbered per call."""
    return f"bench-{tag}-{secrets.token_hex(4)}-{n}"


def call_event(name: str, entry_id: str, started_at: float) -> Webhook:
    """Fixture `name` as a signed webhook of call `entry_id`, moved to start at `started_at`.

    In the fixtures the call starts (IVR) at FIXTURE_EPOCH and rings extension 101 at +5 s;
    with `started_at = time.time() - 5` the Appeared event carries the current second.
    """
    data = fixture(name)
    payload = shift_times(copy.deepcopy(data["json"]), started_at - FIXTURE_EPOCH)
    payload["entry_id"] = entry_id
    if "call_id" in payload:
        payload["call_id"] = f"{entry_id}-leg"
    return Webhook(data["path"], signed_body(API_KEY, API_SALT, payload), entry_id)


def ringing_now(entry_id: str) -> Webhook:
    """An `events/call` Appeared for extension 101 stamped with the current time."""
    return call_event(RINGING, entry_id, time.time() - 5)


def post(conn: http.client.HTTPConnection, base_path: str, hook: Webhook) -> tuple[int, bytes]:
    """POST one webhook on `conn` (reconnects by itself after `Connection: close`)."""
    conn.request("POST", base_path + hook.path, hook.body, HEADERS)
    reply = conn.getresponse()
    return reply.status, reply.read()


def server_env_extra() -> dict[str, str]:
    """gunicorn with production switches, as in bench.events (DEBUG=0 and its checks)."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }


def check_accepted(server_url: str, base_path: str, hook: Webhook) -> None:
    """One webhook by hand first: a misconfigured server must not be benchmarked."""
    conn = http.client.HTTPConnection(server_url.removeprefix("http://"), timeout=10)
    try:
        status, body = post(conn, base_path, hook)
    finally:
        conn.close()
    if status != 200 or b"accepted" not in body:
        raise RuntimeError(f"POST {base_path}{hook.path} answered {status}: {body[:500]!r}")
