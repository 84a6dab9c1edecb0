"""Plays a scenario through the real endpoints of the running app and tells what happened.

Each step is an HTTP request the outside world would make (a PBX webhook signed by its
provider, a Bitrix24 event, Bitrix24 handing an SMS to the sender's handler, MTS pushing a
delivery report); after each one the player waits until the app has done everything it queued (inbox
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
from tests.fakes import generic as generic_fake
from tests.fakes import mango as mango_fake
from tests.fakes import mtt as mtt_fake
from tests.fakes import portal_pages
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal
from tests.fakes.mts import FakeMts

SETTLE_TIMEOUT_S = 60.0
# Every provider's fixtures (tests/fixtures/<provider>/) name the same client and company
# line; the player puts this call's client and the connection's own line in their place.
FIXTURE_CLIENT = "79161234567"
FIXTURE_LINE = "74951234567"
FIXTURE_MODULES = {"mango": mango_fake, "mtt": mtt_fake, "generic": generic_fake}
RECORDING = b"ID3" + bytes(2048)  # enough of an mp3 for Bitrix24 to keep
# A delivery report as MTS pushes it: (status, substatus) of its JSONv2 report.
REPORTS = {"delivered": (2, 23), "undelivered": (3, 26)}
CRM_DEAL, CRM_CONTACT = "2", "3"  # Bitrix24's OWNER_TYPE_ID of a deal and of a contact


@dataclass
class Office:
    """The demo portal as the player needs it."""

    app_url: str
    fake: FakeBitrix24
    remote: FakePortal
    connections: dict[str, Any]  # provider → telephony.models.PbxConnection
    line: str  # the Mango line CRM clicks and callback forms use
    pbx: dict[str, Any]  # provider → its fake server (recordings live there)
    mts: FakeMts
    sender: Any  # sms.models.SmsSender


@dataclass
class Played:
    """One scripted call (or one copy of a repeated one) while and after it plays."""

    entry: str
    client: str
    via: str = "mango"
    command_id: str = ""
    sms_id: str = ""  # Bitrix24's MESSAGE_ID of the SMS this entry sent
    posted_at: float = 0.0  # monotonic, when its first step was sent
    journal: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    # The SMS as the app's journal has it ({"status", "history"}) and the statuses Bitrix24
    # was told (messageservice.message.status.update), in order.
    sms_journal: dict[str, Any] = field(default_factory=dict)
    sms_received: list[str] = field(default_factory=list)


class Player:
    def __init__(self, office: Office, say: Callable[[str], None]) -> None:
        self.office = office
        self.say = say
        self.http = requests.Session()
        # A burst posts up to 50 webhooks at once: one keep-alive connection each.
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=50))
        self.report: dict[str, Any] = {"calls": [], "figures": []}
        # Each connection's own company number, read once: steps run in a burst's threads.
        self._lines = {
            provider: connection.lines.order_by("pk").first().number
            for provider, connection in office.connections.items()
        }
        self._steps: dict[str, Callable[[Played, Step], None]] = {
            "pbx": self._pbx,
            "crm_click": self._crm_click,
            "callback_form": self._callback_form,
            "sms": self._sms,
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
            Played(
                entry if call.repeat == 1 else f"{entry}-{i}",
                _nth_number(call.client, i),
                via=call.via,
            )
            for i in range(call.repeat)
        ]
        sentence = call.say.format(client=_pretty(call.client), n=call.repeat)
        self.say(f"{call.at} [{self._source(call)}] {sentence}")
        before = _last_call_pk()
        counters = self._counters()
        with ThreadPoolExecutor(max_workers=min(call.repeat, 50)) as pool:
            for step in call.steps:
                list(pool.map(lambda played, step=step: self._run(played, step), copies))
                self.settle()
        self._collect(copies, before)
        for played in copies[:1]:  # a burst's copies read alike: the figures follow
            for line in _describe(self.office.remote, played):
                self.say(f"      → {line}")
        if call.repeat > 1:
            self._figures(call, copies, counters)
        self.report["calls"] += [vars(p) for p in copies]

    def _source(self, call: ScriptedCall) -> str:
        """Where the entry comes from: the PBX connection, or the SMS sender."""
        if all(step.kind == "sms" for step in call.steps if step.kind != "pause"):
            return f"SMS · {self.office.sender.name}"
        return self.office.connections[call.via].name

    def _run(self, played: Played, step: Step) -> None:
        if not played.posted_at:
            played.posted_at = time.monotonic()
        self._steps[step.kind](played, step)

    # Steps ---------------------------------------------------------------------------------

    def _pbx(self, played: Played, step: Step) -> None:
        from telephony import providers

        module = FIXTURE_MODULES[played.via]
        connection = self.office.connections[played.via]
        data = module.fixture(str(step.value))
        payload = copy.deepcopy(data["json"])
        line = self._lines[played.via]
        _replace(payload, FIXTURE_LINE, line.lstrip("+"))
        _replace(payload, "+" + FIXTURE_LINE, line)
        _replace(payload, FIXTURE_CLIENT, played.client.lstrip("+"))
        _replace(payload, "+" + FIXTURE_CLIENT, played.client)
        self._patches[played.via](payload, played, step)
        _set(payload, step.options.get("set") or {})
        payload = module.shift_times(payload, time.time() - module.FIXTURE_EPOCH - 5)
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

    @property
    def _patches(self) -> dict[str, Callable[[dict[str, Any], Played, Step], None]]:
        """Per provider: how a fixture becomes this entry's call (its ids, its recording)."""
        return {"mango": self._mango, "mtt": self._mtt, "generic": self._generic}

    def _mango(self, payload: dict[str, Any], played: Played, step: Step) -> None:
        payload["entry_id"] = played.entry
        if "call_id" in payload:
            payload["call_id"] = f"{played.entry}-{step.options.get('leg', 'a')}"
        if played.command_id:
            payload["command_id"] = played.command_id
        if step.options.get("recording"):
            payload["recording_id"] = f"{played.entry}-rec"
            self.office.pbx["mango"].recordings[payload["recording_id"]] = RECORDING

    def _mtt(self, payload: dict[str, Any], played: Played, step: Step) -> None:
        payload["call_id"] = played.entry
        if payload.get("type") == "end_call" and not step.options.get("recording"):
            payload["recorded"] = "false"  # else the app fetches the call's recording
        elif step.options.get("recording"):  # MTT's API finds a call's recording by call_id
            self.office.pbx["mtt"].recordings[played.entry] = [RECORDING]

    def _generic(self, payload: dict[str, Any], played: Played, step: Step) -> None:
        payload["call_id"] = played.entry
        if step.options.get("recording"):  # the PBX's own web server hands the file out
            files = self.office.pbx["generic"]
            path = f"recordings/{played.entry}.mp3"
            files.files[path] = RECORDING
            payload["recording_url"] = files.url(path)

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

    def _sms(self, played: Played, step: Step) -> None:
        """A user sends an SMS from a deal: Bitrix24 posts it to the sender's handler; once
        the app has sent it through MTS, MTS pushes its delivery report to the app."""
        from bitrixapp.formdata import php_query
        from sms.models import SmsMessage

        spec = step.value or {}
        sender = self.office.sender
        played.sms_id = f"{played.entry}-sms"
        bindings = [{"OWNER_TYPE_ID": CRM_DEAL, "OWNER_ID": str(spec.get("deal") or 1)}]
        if spec.get("contact"):
            bindings.append({"OWNER_TYPE_ID": CRM_CONTACT, "OWNER_ID": str(spec["contact"])})
        form = {
            "type": "SMS",
            "code": sender.code,
            "message_id": played.sms_id,
            "message_to": played.client,
            "message_body": str(spec.get("text") or "Hello"),
            "module_id": "crm",
            "bindings": bindings,
            "ts": str(int(time.time())),
            "auth": self.office.remote.auth_data(),
        }
        answer = self.http.post(
            sender.handler_url,
            data=php_query(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        if answer.status_code != 200:
            raise RuntimeError(f"SMS handler: the app answered {answer.status_code}: {answer.text}")
        self.settle()
        message = SmsMessage.objects.get(sender=sender, b24_message_id=played.sms_id)
        if message.status != "sent":
            raise RuntimeError(f"SMS {played.sms_id}: {message.status} ({message.reason})")
        status, substatus = REPORTS[str(spec.get("report") or "delivered")]
        mts = self.office.mts
        code, body = mts.push(mts.set_status(message.extra_id, status, substatus))
        if code != 200:
            raise RuntimeError(f"delivery report: the app answered {code}: {body[:300]!r}")

    def _event(self, played: Played, name: str, data: dict[str, Any]) -> None:
        """A Bitrix24 event as Bitrix24 posts it; then the command the app gave the PBX."""
        mango = self.office.pbx["mango"]
        asked = len(mango.callbacks)
        form = {"event": name, "event_handler_id": "1", "ts": str(int(time.time()))}
        form |= {f"auth[{k}]": v for k, v in self.office.remote.auth_data(False).items()}
        form |= {f"data[{k}]": str(v) for k, v in data.items()}
        answer = self.http.post(f"{self.office.app_url}/bitrix/events/", data=form, timeout=10)
        if answer.status_code != 200:
            raise RuntimeError(f"{name}: the app answered {answer.status_code}: {answer.text}")
        self._wait(lambda: len(mango.callbacks) > asked, f"{name}: PBX asked to ring")
        played.command_id = str(mango.callbacks[asked].get("command_id") or "")

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
        for played in copies:
            if played.sms_id:
                self._collect_sms(played)

    def _collect_sms(self, played: Played) -> None:
        from sms.models import SmsMessage

        message = SmsMessage.objects.get(sender=self.office.sender, b24_message_id=played.sms_id)
        played.sms_journal = {
            "message_id": played.sms_id,
            "status": message.status,
            "history": list(message.history.order_by("at", "pk").values_list("status", flat=True)),
            "segments": message.segments,
        }
        with self.office.fake._lock:
            told = list(self.office.remote.message_statuses)
        played.sms_received = [
            s["STATUS"]
            for s in told
            if s["MESSAGE_ID"] == played.sms_id and s["CODE"] == self.office.sender.code
        ]

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
    from sms.models import SmsDeliveryReport, SmsHandlerCall, SmsMessage
    from telephony.models import CallRecording, PbxEvent

    waiting = (
        PbxEvent.objects.filter(state="received").exists()
        or BitrixEvent.objects.filter(state="received").exists()
        or SmsHandlerCall.objects.filter(state="received").exists()
        or SmsDeliveryReport.objects.filter(state="received").exists()
        or SmsMessage.objects.filter(status="queued").exists()
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
        "pbx": row.connection.provider,
        "line_number": row.line_number,
        "recordings_attached": sum(1 for r in row.recordings.all() if r.state == "attached"),
    }


def _received_row(got: portal_pages.ReceivedCall) -> dict[str, Any]:
    return {
        "call_id": got.call_id,
        "line": got.line,
        "registered_by": got.registered_by,
        "shown_to": got.shown_to(),
        "hidden_from": got.hidden_from(),
        "finish": got.finish,
        "records": got.records,
    }


def _describe(remote: FakePortal, played: Played) -> list[str]:
    if played.sms_id:
        return [_describe_sms(played)]
    lines = []
    for got in played.received:
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
        lines.append(f"Bitrix24{_line(remote, got['line'])}: " + "; ".join(parts))
    return lines or ["Bitrix24 received nothing for this call"]


def _line(remote: FakePortal, number: str) -> str:
    """The line a call was logged on, as the portal names it (the name says which PBX)."""
    if not number:
        return ""
    name = (remote.lines.get(number) or {}).get("NAME") or ""
    return f" (line {number}{f' “{name}”' if name else ''})"


def _describe_sms(played: Played) -> str:
    told = " → ".join(played.sms_received) or "nothing"
    return (
        f"Bitrix24: SMS {played.sms_id} status updates {told} "
        f"(messageservice.message.status.update); the app's journal: "
        f"{' → '.join(played.sms_journal.get('history') or [])}"
    )


def _names(remote: FakePortal, users: list[int]) -> str:
    return ", ".join(str((remote.find_user("ID", u) or {}).get("NAME") or u) for u in users)


def _set(payload: dict[str, Any], changes: dict[str, Any]) -> None:
    """A step's `set:` patches: dotted keys into the payload."""
    for dotted, value in changes.items():
        *parents, name = str(dotted).split(".")
        node = payload
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value


def _replace(node: Any, old: str, new: str) -> None:
    """A fixture's number → this call's, wherever the PBX reports it."""
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
