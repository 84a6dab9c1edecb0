"""Plays a scenario through the real endpoints of the running app and tells what happened.

Each step is an HTTP request the outside world would make (a signed PBX webhook, a Bitrix24
event); after each one the player waits until the app has done everything it queued (inbox
rows processed, recordings attached, Bitrix24 commands sent), then reads what the fake
Bitrix24 received and says it in words.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
import requests

from demo.scenario import Scenario, ScriptedCall, Step
from tests.fakes import portal_pages
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal
from tests.fakes.mango import FIXTURE_EPOCH, FakeMango, fixture, shift_times

SETTLE_TIMEOUT_S = 60.0
FIXTURE_CLIENT = "79161234567"  # the client's number in tests/fixtures/mango/
RECORDING = b"ID3" + bytes(2048)  # enough of an mp3 for Bitrix24 to keep


@dataclass
class Office:
    """The demo portal as the player needs it."""

    app_url: str
    fake: FakeBitrix24
    mango: FakeMango
    remote: FakePortal
    connection: Any  # telephony.models.PbxConnection
    line: str


@dataclass
class Played:
    """One scripted call (or one copy of a repeated one) while and after it plays."""

    entry: str
    client: str
    command_id: str = ""
    posted_at: float = 0.0  # monotonic, when its first step was sent
    journal: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)


class Player:
    def __init__(self, office: Office, say: Callable[[str], None]) -> None:
        self.office = office
        self.say = say
        self.http = requests.Session()
        # A burst posts up to 50 webhooks at once: one keep-alive connection each.
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=50))
        self.report: dict[str, Any] = {"calls": [], "figures": []}
        self._steps: dict[str, Callable[[Played, Step], None]] = {
            "pbx": self._pbx,
            "crm_click": self._crm_click,
            "callback_form": self._callback_form,
            "pause": lambda _played, step: time.sleep(float(step.value)),
        }

    def play(self, scenario: Scenario) -> dict[str, Any]:
        self.say(f"Playing “{scenario.title}” ({scenario.name})")
        for number, call in enumerate(scenario.calls, 1):
            self._play_call(f"{scenario.name}-{number}", call)
        self.report["scenario"] = scenario.name
        return self.report

    def _play_call(self, entry: str, call: ScriptedCall) -> None:
        copies = [
            Played(entry if call.repeat == 1 else f"{entry}-{i}", _nth_number(call.client, i))
            for i in range(call.repeat)
        ]
        self.say(f"{call.at} {call.say.format(client=_pretty(call.client), n=call.repeat)}")
        before = _last_call_pk()
        counters = self._counters()
        with ThreadPoolExecutor(max_workers=min(call.repeat, 50)) as pool:
            for step in call.steps:
                list(pool.map(lambda played, step=step: self._run(played, step), copies))
                self.settle()
        self._collect(copies, before)
        for played in copies[:1]:  # a burst's copies read alike: the figures follow
            for line in _describe(self.office.remote, played.received):
                self.say(f"      → {line}")
        if call.repeat > 1:
            self._figures(call, copies, counters)
        self.report["calls"] += [vars(p) for p in copies]

    def _run(self, played: Played, step: Step) -> None:
        if not played.posted_at:
            played.posted_at = time.monotonic()
        self._steps[step.kind](played, step)

    # Steps ---------------------------------------------------------------------------------

    def _pbx(self, played: Played, step: Step) -> None:
        from telephony import providers

        data = fixture(str(step.value))
        payload = copy.deepcopy(data["json"])
        self._patch(payload, played, step)
        payload = shift_times(payload, time.time() - FIXTURE_EPOCH - 5)
        connection = self.office.connection
        provider = providers.get(connection.provider)
        hook = provider.sign_fixture(
            connection.credentials, data["path"], payload, data.get("headers") or {}
        )
        url = f"{self.office.app_url}/telephony/hooks/{connection.webhook_uuid}/{hook.path}"
        headers = {**hook.headers, "Content-Type": hook.content_type}
        answer = self.http.post(url, data=hook.body, headers=headers, timeout=10)
        if answer.status_code != 200:
            raise RuntimeError(
                f"{step.value}: the app answered {answer.status_code}: {answer.text}"
            )

    def _patch(self, payload: dict[str, Any], played: Played, step: Step) -> None:
        payload["entry_id"] = played.entry
        if "call_id" in payload:
            payload["call_id"] = f"{played.entry}-{step.options.get('leg', 'a')}"
        _replace(payload, FIXTURE_CLIENT, played.client.lstrip("+"))
        if played.command_id:
            payload["command_id"] = played.command_id
        if step.options.get("recording"):
            payload["recording_id"] = f"{played.entry}-rec"
            self.office.mango.recordings[payload["recording_id"]] = RECORDING
        for dotted, value in (step.options.get("set") or {}).items():
            *parents, name = str(dotted).split(".")
            node = payload
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = value

    def _crm_click(self, played: Played, step: Step) -> None:
        user = int(step.value["user"])
        call_id = self.office.remote.register_call(
            USER_ID=user, PHONE_NUMBER=played.client, TYPE=1, LINE_NUMBER=self.office.line
        )
        data = {
            "CALL_ID": call_id,
            "USER_ID": user,
            "PHONE_NUMBER": played.client,
            "LINE_NUMBER": self.office.line,
            "CALL_TYPE": 1,
        }
        self._event(played, "ONEXTERNALCALLSTART", data)

    def _callback_form(self, played: Played, step: Step) -> None:
        owner = (step.value or {}).get("crm_owner")
        if owner:
            self.office.remote.crm_entities[played.client] = {
                "CRM_ENTITY_TYPE": "CONTACT",
                "CRM_ENTITY_ID": 5,
                "ASSIGNED_BY_ID": int(owner),
            }
        data = {
            "PHONE_NUMBER": played.client,
            "LINE_NUMBER": self.office.line,
            "TEXT": "Please call me back",
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": "5",
        }
        self._event(played, "ONEXTERNALCALLBACKSTART", data)

    def _event(self, played: Played, name: str, data: dict[str, Any]) -> None:
        """A Bitrix24 event as Bitrix24 posts it; then the command the app gave the PBX."""
        asked = len(self.office.mango.callbacks)
        form = {"event": name, "event_handler_id": "1", "ts": str(int(time.time()))}
        form |= {f"auth[{k}]": v for k, v in self.office.remote.auth_data(False).items()}
        form |= {f"data[{k}]": str(v) for k, v in data.items()}
        answer = self.http.post(f"{self.office.app_url}/bitrix/events/", data=form, timeout=10)
        if answer.status_code != 200:
            raise RuntimeError(f"{name}: the app answered {answer.status_code}: {answer.text}")
        self._wait(lambda: len(self.office.mango.callbacks) > asked, f"{name}: PBX asked to ring")
        played.command_id = str(self.office.mango.callbacks[asked].get("command_id") or "")

    # Waiting and telling -------------------------------------------------------------------

    def settle(self) -> None:
        """Wait until the app has nothing left to do: every inbox row handled, every
        recording attached or failed, every Bitrix24 command sent."""
        self._wait(_idle, "the app to finish its work")

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _collect(self, copies: list[Played], before: int) -> None:
        from telephony.models import Call

        received = {
            c.call_id: c
            for c in portal_pages.call_log(self.office.fake, self.office.remote.member_id)
        }
        rows = Call.objects.filter(pk__gt=before).prefetch_related("recordings").order_by("pk")
        for row in rows:
            played = next(
                (
                    p
                    for p in copies
                    if row.call_key == p.entry or (p.command_id and row.command_id == p.command_id)
                ),
                None,
            )
            if played is None:
                continue
            played.journal.append(_journal_row(row))
            got = received.get(row.b24_call_id)
            if got is not None:
                played.received.append(_received_row(got))

    def _counters(self) -> dict[str, int]:
        fake = self.office.fake
        with fake._lock:
            return {
                "requests": len(fake.http_requests),
                "calls": len(fake.calls),
                "throttled": len(fake.throttled),
            }

    def _figures(self, call: ScriptedCall, copies: list[Played], before: dict[str, int]) -> None:
        fake = self.office.fake
        with fake._lock:
            new_calls = fake.calls[before["calls"] :]
            requests_sent = len(fake.http_requests) - before["requests"]
            throttled = len(fake.throttled) - before["throttled"]
        first_card = {}
        for c in new_calls:
            if c.ok and c.method.lower() == "telephony.externalcall.register":
                ext = str(c.params.get("EXTERNAL_CALL_ID") or "").split(":", 1)[-1]
                first_card.setdefault(ext, c.at)
        latencies = [first_card[p.entry] - p.posted_at for p in copies if p.entry in first_card]
        figures = {
            "calls": call.repeat,
            "cards": len(latencies),
            "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "requests_to_bitrix24": requests_sent,
            "batches": sum(1 for c in new_calls if c.method.lower() == "batch"),
            "rest_methods_executed": sum(1 for c in new_calls if c.method.lower() != "batch"),
            "rate_limit_refusals": throttled,
        }
        self.report["figures"].append(figures)
        self.say(
            f"      {figures['cards']} of {call.repeat} cards shown; webhook → card: median "
            f"{figures['latency_median_s']} s, slowest {figures['latency_max_s']} s"
        )
        self.say(
            f"      {figures['rest_methods_executed']} Bitrix24 methods in "
            f"{figures['requests_to_bitrix24']} requests ({figures['batches']} batches); "
            f"{figures['rate_limit_refusals']} rate-limit refusals"
        )


def _idle() -> bool:
    from bitrixapp.models import B24Command, BitrixEvent
    from telephony.models import CallRecording, PbxEvent

    waiting = (
        PbxEvent.objects.filter(state="received").exists()
        or BitrixEvent.objects.filter(state="received").exists()
        or CallRecording.objects.filter(state__in=("pending", "downloaded")).exists()
        or B24Command.objects.filter(state__in=B24Command.OPEN_STATES).exists()
    )
    return not waiting


def _last_call_pk() -> int:
    from telephony.models import Call

    return Call.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _journal_row(row: Any) -> dict[str, Any]:
    return {
        "b24_call_id": row.b24_call_id,
        "origin": row.origin,
        "phase": row.phase,
        "status_code": row.status_code,
        "duration": row.duration,
        "answered_user_id": row.answered_user_id,
        "recordings_attached": sum(1 for r in row.recordings.all() if r.state == "attached"),
    }


def _received_row(got: portal_pages.ReceivedCall) -> dict[str, Any]:
    return {
        "call_id": got.call_id,
        "registered_by": got.registered_by,
        "shown_to": got.shown_to(),
        "hidden_from": got.hidden_from(),
        "finish": got.finish,
        "records": got.records,
    }


def _describe(remote: FakePortal, received: list[dict[str, Any]]) -> list[str]:
    lines = []
    for got in received:
        parts = []
        if got["registered_by"] != "app":
            parts.append("card opened by Bitrix24 itself for the click")
        elif got["shown_to"]:
            parts.append(f"card shown to {_names(remote, got['shown_to'])}")
        else:
            parts.append("logged without a card")
        if got["hidden_from"]:
            parts.append(f"hidden from {_names(remote, got['hidden_from'])}")
        finish = got["finish"]
        if finish:
            words = portal_pages.STATUS_WORDS.get(finish["status"], "failed")
            who = _names(remote, [finish["user"]])
            parts.append(f"finished for {who}: {finish['status']} {words}, {finish['duration']} s")
        if got["records"]:
            parts.append(f"recording attached ({', '.join(got['records'])})")
        lines.append("Bitrix24: " + "; ".join(parts))
    return lines or ["Bitrix24 received nothing for this call"]


def _names(remote: FakePortal, users: list[int]) -> str:
    return ", ".join(str((remote.find_user("ID", u) or {}).get("NAME") or u) for u in users)


def _replace(node: Any, old: str, new: str) -> None:
    """The fixtures' client number → this call's client, wherever the PBX reports it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if value == old:
                node[key] = new
            else:
                _replace(value, old, new)


def _nth_number(client: str, n: int) -> str:
    """The n-th client of a burst: the scenario's number with its last digits counting up."""
    if n == 0:
        return client
    digits = client.lstrip("+")
    return "+" + digits[:-4] + f"{(int(digits[-4:]) + n) % 10000:04d}"


def _pretty(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
