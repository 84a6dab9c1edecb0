"""Mango Office VPBX (VATS) provider: webhooks in, click-to-call and recordings out.

Source for every field and code used here: "API MANGO OFFICE" v1.9 (official PDF), as extracted
in github.com/G-Ivan-A/mango_ba_prompts, kb/mango-product-docs/processed/vpbx-api/sections/
(cited below as "VPBX API §x.y").

Every request in both directions is a form POST with `vpbx_api_key`, `sign` and `json` (the
payload as a JSON string), signed `sha256_hex(vpbx_api_key + json + vpbx_api_salt)` (§2.4.3).
Mango appends its event paths (`events/call`, `events/summary`, ...) to the one base URL the
customer registered; that suffix is `Webhook.path`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urljoin

import requests
from django.utils.translation import gettext_lazy as _

from bitrixapp import public_http, storable
from telephony.providers.base import (
    FORM,
    CallEvent,
    ConnectionLike,
    Direction,
    Kind,
    ProviderError,
    Recording,
    SignedWebhook,
    Webhook,
    WebhookRejected,
)

TIMEOUT = (5, 15)  # (connect, read) seconds for every request to Mango
FORM_FIELDS = ("vpbx_api_key", "sign", "json")
REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Bounds of what a webhook may carry. A value outside them is refused with a 400 naming the
# field instead of overflowing later (datetime, PostgreSQL integer and varchar columns), after
# the webhook was already accepted.
LATEST_TIME = 4102444800  # 2100-01-01: epoch seconds beyond it are not times a PBX reports
LONGEST_TALK_S = 30 * 24 * 3600  # far beyond any real call, far inside an integer column
MAX_SEQ = 2**31 - 1

Payload = dict[str, Any]


def sign(api_key: str, json_text: str, salt: str) -> str:
    """Mango's signature: plain SHA-256 (not HMAC), lowercase hex, over the exact json text."""
    return hashlib.sha256((api_key + json_text + salt).encode("utf-8")).hexdigest()


def signed_form(api_key: str, salt: str, payload: Mapping[str, Any]) -> dict[str, str]:
    """The three form fields of a request to Mango."""
    json_text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return {"vpbx_api_key": api_key, "sign": sign(api_key, json_text, salt), "json": json_text}


def code_class_lookup(table: Mapping[str, str], code: str) -> str | None:
    """Look a 4-digit Mango result code up by itself, then by its group, subclass and class
    ("1121" → "112x" → "11xx" → "1xxx"). The code list tells clients to read an unknown code as
    its nearest known class (VPBX API, "Список кодов результатов")."""
    if not (len(code) == 4 and code.isdigit()):
        return None
    for key in (code, code[:3] + "x", code[:2] + "xx", code[:1] + "xxx"):
        if key in table:
            return table[key]
    return None


class Mango:
    slug: ClassVar[str] = "mango"
    name: ClassVar[str] = "Mango Office"
    credential_keys: ClassVar[tuple[str, ...]] = ("api_key", "api_salt")
    optional_credential_keys: ClassVar[tuple[str, ...]] = ()
    # events/summary is "the final event of the call; after it the call can be considered
    # finished" (VPBX API §3.1.6), so the call is finished on SUMMARY, not on a leg's ENDED.
    sends_summary: ClassVar[bool] = True
    default_api_url: ClassVar[str] = "https://app.mango-office.ru/vpbx/"
    # Mango puts the account's API key in every notification; `sign` is useless once checked.
    secret_fields: ClassVar[tuple[str, ...]] = ("vpbx_api_key", "sign")
    kept_headers: ClassVar[tuple[str, ...]] = ()
    webhook_hint: ClassVar[str] = _(
        "In Mango Office: Integrations → API connector, the external system's address."
    )

    # events/call `call_state` (VPBX API §3.1.2). A pickup and a transfer show up as a new
    # leg's Connected, so there is no separate transfer state.
    CALL_STATES: ClassVar[dict[str, Kind]] = {
        "Appeared": Kind.RINGING,
        "Connected": Kind.ANSWERED,
        "OnHold": Kind.HELD,
        "Disconnected": Kind.ENDED,
    }

    # events/call has no direction field: it follows from which sides are employees, i.e. carry
    # `extension` (from has one only if the caller is an employee; to has none until the call is
    # placed on an employee, e.g. in IVR or a queue). Key: (from.extension?, to.extension?).
    CALL_SHAPES: ClassVar[dict[tuple[bool, bool], Direction]] = {
        (True, True): Direction.INTERNAL,
        (True, False): Direction.OUTBOUND,
        (False, True): Direction.INBOUND,
        (False, False): Direction.INBOUND,  # IVR / queue: nobody picked yet
    }

    # events/summary `call_direction` (VPBX API §3.1.6); sent as a number, keyed as text.
    SUMMARY_DIRECTIONS: ClassVar[dict[str, Direction]] = {
        "0": Direction.INTERNAL,
        "1": Direction.INBOUND,
        "2": Direction.OUTBOUND,
    }

    # Which side is the employee, which the other party, and which field of the other party
    # is "the number": (employee side, other side, field). Internal calls are logged (when a
    # connection asks for it) as incoming for the called employee, from the caller's extension.
    PARTIES: ClassVar[dict[Direction, tuple[str, str, str]]] = {
        Direction.INBOUND: ("to", "from", "number"),
        Direction.OUTBOUND: ("from", "to", "number"),
        Direction.INTERNAL: ("to", "from", "extension"),
    }

    # disconnect_reason → Bitrix24 STATUS_CODE (telephony.externalcall.finish).
    # Source: VPBX API "Список кодов результатов" (PDF pp. 322-327) for each code's meaning and
    # §3.1.2 for the classes (11xx normal, 2xxx billing, 32xx wrong number, 42xx unreachable,
    # 5001 overload, 5003 technical). Looked up by code, then group/subclass/class
    # (code_class_lookup). The Bitrix code chosen for a meaning is ours: rows marked "choice"
    # are judgement calls where the doc gives the meaning but no Bitrix equivalent exists.
    # "304" means "no failure": the attempt was not answered for an ordinary reason (it is the
    # outcome of an unanswered leg or call; an answered one is a "200" whatever the reason).
    DISCONNECT_STATUS: ClassVar[dict[str, str]] = {
        "1xxx": "304",  # 1000/1001 action done: a normal end
        "11xx": "304",  # 1100 call ended normally
        "1110": "304",  # ended by the caller (before an answer: a missed call)
        "1111": "304",  # no answer within the ring timeout
        "1120": "304",  # ended by the called party
        "1121": "486",  # "busy" received from the remote side
        "1122": "603",  # rejected by the called party
        "1123": "480",  # "do not disturb" signal received (choice: DND = temporarily unavail.)
        "1124": "480",  # recipient in "do not disturb" status in the contact centre (choice)
        "1125": "603-S",  # operator stopped the outbound-dialling task (choice: cancelled)
        "1130": "403",  # restrictions for the called number
        "1131": "480",  # called number unavailable
        "1132": "404",  # called number not in service (choice: wrong number)
        "1133": "404",  # called number does not exist
        "1134": "OTHER",  # too many forwardings
        "1135": "403",  # forwarding forbidden
        "114x": "403",  # calls to the region forbidden by the PBX settings
        "115x": "403",  # restrictions for the calling number
        "1151": "423",  # caller is in the blacklist
        "1152": "423",  # caller is not in the whitelist
        "116x": "304",  # call to a group failed (nobody answered)
        "1161": "OTHER",  # hold forbidden by the PBX settings
        "1162": "486",  # hold queue full (choice: busy)
        "1163": "304",  # waited too long in the hold queue: missed
        "1164": "480",  # all operators are unavailable right now
        "117x": "304",  # ended by the forwarding scheme (e.g. IVR hang-up)
        "1171": "OTHER",  # forwarding scheme misconfigured
        "118x": "304",  # ended by a user/API command, a pickup (1182) or a new operator (1183)
        "119x": "480",  # called number inactive or outside its schedule
        "1193": "486",  # called number in a conversation with auto-reject set (choice: busy)
        "12xx": "OTHER",  # contact-centre session errors: not call outcomes
        "13xx": "304",  # 1300 ended normally; 131x answering machine detected
        "1311": "480",  # answering machine: subscriber unavailable
        "1312": "486",  # answering machine: subscriber busy
        "2xxx": "402",  # billing restriction (doc class); insufficient funds is 2240
        "2300": "423",  # direction blocked (choice: blocked rather than billing)
        "3xxx": "OTHER",  # invalid request
        "32xx": "404",  # wrong subscriber number
        "4xxx": "OTHER",  # the action cannot be performed
        "42xx": "480",  # the subscriber cannot be reached right now
        "45xx": "403",  # security restrictions (call rate limit, security profile)
        "4502": "423",  # caller is in the incoming blacklist
        "4507": "423",  # subscriber blocked
        "5xxx": "503",  # server error (choice: the doc only lists 5001 and 5003 for calls)
        "5001": "503",  # overload
        "5003": "503",  # technical problems
    }

    # Command/query `result` codes → words for ProviderError (VPBX API §3.2.1 and the code list).
    RESULT_MEANINGS: ClassVar[dict[str, str]] = {
        "1xxx": "success",
        "2xxx": "forbidden by Mango billing",
        "21xx": "the Mango account is unavailable (blocked, closed or frozen)",
        "22xx": "access to the Mango account is restricted",
        "2240": "insufficient funds on the Mango account",
        "2300": "direction blocked",
        "3xxx": "invalid request",
        "3100": "invalid command parameters",
        "3102": "sign does not match: check api_salt of this connection",
        "3103": "a required parameter is missing",
        "3104": "a parameter has the wrong format",
        "3105": "invalid vpbx_api_key: check api_key of this connection",
        "3124": "this line cannot be used as the outgoing number",
        "32xx": "wrong subscriber number",
        "33xx": "object not found",
        "3320": "recording not found",
        "4xxx": "the action cannot be performed",
        "4001": "command not supported",
        "5xxx": "Mango server error",
    }

    # Command/query `result` codes after which retrying the same request cannot help, looked up
    # like RESULT_MEANINGS (nearest class). True = permanent: a download fails at once.
    RESULT_PERMANENT: ClassVar[dict[str, bool]] = {
        "1xxx": False,  # success codes never reach here
        "2xxx": False,  # billing: the customer can pay or unblock the account within the day
        "3xxx": True,  # invalid request: the same request is refused again
        "3100": True,  # invalid parameters of our request
        # Wrong credentials: also, Mango blocks the whole product's API after invalid requests
        # (HTTP 401, one per 2 minutes), so retrying would break click-to-call for everyone.
        "3102": True,
        "3105": True,
        "3103": True,  # a required parameter is missing from our request
        "3104": True,  # a parameter of our request has the wrong format
        "3124": True,  # the line cannot be the outgoing number: an admin must change it
        "32xx": True,  # wrong subscriber number
        "33xx": True,  # the object does not exist
        # recording not found: record/added may come before the file is downloadable (the doc
        # warns availability lags), so "not found" means "not yet" for a while.
        "3320": False,
        "4xxx": False,  # the action cannot be performed right now
        "4001": True,  # command not supported by this product
        "5xxx": False,  # Mango server error
    }

    # HTTP answers that mean "stop and retry later" whatever the endpoint (VPBX API §1.4).
    HTTP_ERRORS: ClassVar[dict[int, str]] = {
        429: "Mango rate limit exceeded (HTTP 429): too many requests for this product; "
        "retry later",
        401: "Mango blocked API access (HTTP 401): it allows one invalid request per 2 minutes; "
        "check api_key and api_salt, then retry after 2 minutes",
        503: "Mango is overloaded (HTTP 503): retry later",
    }

    # Recording file extension by Content-Type; Mango documents mp3.
    RECORDING_TYPES: ClassVar[dict[str, str]] = {"audio/wav": "wav", "audio/x-wav": "wav"}

    # Webhook inbound ------------------------------------------------------------------------

    def verify(self, connection: ConnectionLike, hook: Webhook) -> None:
        form = _form(hook)
        for name in FORM_FIELDS:
            if not form.get(name):
                raise WebhookRejected(400, f"{name} is required", field=name)
        api_key, salt = _credentials(connection)
        if not _same(form["vpbx_api_key"], api_key):
            raise WebhookRejected(
                403,
                "vpbx_api_key does not match this connection's api_key: "
                "is this the webhook URL of another connection?",
                field="vpbx_api_key",
            )
        if not _same(form["sign"].strip().lower(), sign(api_key, form["json"], salt)):
            raise WebhookRejected(
                403,
                "sign does not match: check api_salt of this connection "
                "(Mango signs sha256(api_key + json + api_salt))",
                field="sign",
            )

    # Fields read as text (dotted: inside from/to), with the longest value that fits where it
    # ends up (Call.call_key, command_id, client_number, line_number; CallRecording.recording_id);
    # None: no column, no limit. An object or a list in any of them is refused, not read as text.
    TEXT_FIELDS: ClassVar[dict[str, int | None]] = {
        "entry_id": 255,
        "call_id": None,
        "call_state": None,
        "call_direction": None,
        "disconnect_reason": None,
        "transfer": None,
        "callback_initiator": None,
        "command_id": 64,
        "recording_id": 255,
        "recording_state": None,
        "completion_code": None,
        "line_number": 64,
        "extension": 64,
        "from.number": 64,
        "from.extension": 64,
        "from.line_number": 64,
        "to.number": 64,
        "to.extension": 64,
        "to.line_number": 64,
    }

    def parse(self, hook: Webhook) -> list[CallEvent]:
        path = _path(hook)
        payload = _payload(hook)
        self._check_text_fields(payload)
        parser = self.PARSERS.get(path, Mango._parse_other)
        return parser(self, path, payload)

    def dedupe_key(self, hook: Webhook) -> str:
        # Mango re-sends the same form on retry; the json text identifies the notification.
        text = _form(hook).get("json") or hook.body.decode("utf-8", "replace")
        return hashlib.sha256(f"{_path(hook)}\n{text}".encode()).hexdigest()

    def sign_fixture(
        self, credentials: Mapping[str, str], path: str, payload: Any, headers: Mapping[str, str]
    ) -> SignedWebhook:
        """A notification as Mango posts it: a form with the key, the json text and its sign."""
        form = signed_form(credentials["api_key"], credentials["api_salt"], payload)
        return SignedWebhook(path, urlencode(form).encode(), FORM, dict(headers))

    def _check_text_fields(self, payload: Payload) -> None:
        for dotted, limit in self.TEXT_FIELDS.items():
            *side, name = dotted.split(".")
            value = (_side(payload, side[0]) if side else payload).get(name)
            if isinstance(value, dict | list):
                raise WebhookRejected(400, f"json.{dotted} must be text", field=f"json.{dotted}")
            if limit is not None and len(_text(value)) > limit:
                raise WebhookRejected(
                    400,
                    f"json.{dotted} is longer than {limit} characters",
                    field=f"json.{dotted}",
                )

    def _parse_call(self, path: str, p: Payload) -> list[CallEvent]:
        _require(p, "entry_id", "call_id", "call_state")
        state = _text(p["call_state"])
        sides = {"from": _side(p, "from"), "to": _side(p, "to"), "": {}}
        leg_direction = self.CALL_SHAPES[_shape(sides)]
        # A callback's first leg rings the employee with the number to dial in `from`, so the
        # parties follow the leg's own shape, not the callback's (outbound) direction.
        employee, client, number_field = self.PARTIES[leg_direction]
        kind = self.CALL_STATES.get(state, Kind.UNKNOWN)
        reason = _text(p.get("disconnect_reason")) if kind is Kind.ENDED else ""
        return [
            CallEvent(
                kind=kind,
                call_key=_text(p["entry_id"]),
                leg=_text(p["call_id"]),
                seq=_number(p, "seq", MAX_SEQ),
                at=_time(p, "timestamp"),
                direction=self._callback_aware(leg_direction, p),
                client_number=_text(sides[client].get(number_field)),
                line_number=_text(sides["to"].get("line_number"))
                or _text(sides["from"].get("line_number")),
                extension=_text(sides[employee].get("extension")),
                transfer=_text(p.get("transfer")),
                status_code=self.status_code(reason) if reason else "",
                reason=reason,
                command_id=_text(p.get("command_id")),
                raw_type=f"{path}:{state}",
            )
        ]

    def _callback_aware(self, direction: Direction, p: Payload) -> Direction:
        # `callback_initiator` is sent only on callback calls (API, web, widget, contact
        # centre...): the company calls out, though the first leg looks inbound. `command_id`
        # alone proves nothing: a `commands/route`d inbound call carries one too (VPBX API,
        # "Маршрутизация вызова" example).
        if direction is Direction.INBOUND and p.get("callback_initiator"):
            return Direction.OUTBOUND
        return direction

    def _parse_summary(self, path: str, p: Payload) -> list[CallEvent]:
        _require(p, "entry_id")
        sides = {"from": _side(p, "from"), "to": _side(p, "to"), "": {}}
        direction = self.SUMMARY_DIRECTIONS.get(_text(p.get("call_direction")))
        employee, client, number_field = self.PARTIES[direction or self.CALL_SHAPES[_shape(sides)]]
        talk_time, end_time = _time(p, "talk_time") or 0, _time(p, "end_time") or 0
        # Not `entry_result`: the doc's own IVR-only example has entry_result 1, talk_time 0.
        answered = talk_time > 0
        if answered and end_time - talk_time > LONGEST_TALK_S:
            raise WebhookRejected(
                400,
                f"json.end_time is more than {LONGEST_TALK_S} s after json.talk_time",
                field="json.end_time",
            )
        reason = _text(p.get("disconnect_reason"))
        return [
            CallEvent(
                kind=Kind.SUMMARY,
                call_key=_text(p["entry_id"]),
                at=end_time or None,
                direction=direction,
                client_number=_text(sides[client].get(number_field)),
                line_number=_text(p.get("line_number")),
                # inbound: who answered, or on a miss the first in the forwarding chain (a
                # group's own number when the call went to a group)
                extension=_text(sides[employee].get("extension")),
                answered=answered,
                talk_seconds=int(max(0, end_time - talk_time)) if answered else 0,
                started_at=_time(p, "create_time"),
                status_code=self._summary_status(answered, reason),
                reason=reason,
                raw_type=path,
            )
        ]

    def _summary_status(self, answered: bool, reason: str) -> str:
        if answered:
            return "200"
        return self.status_code(reason) if reason else "304"

    def _parse_recording(self, path: str, p: Payload) -> list[CallEvent]:
        _require(p, "entry_id", "recording_id", "recording_state")
        state = _text(p["recording_state"])
        code = _text(p.get("completion_code"))
        # Only Completed with 1000 leaves a file: 4002 "too short, will not be saved", 22xx
        # "account restricted" (VPBX API §3.1.4). Started/Continued are progress reports.
        ready = state == "Completed" and code == "1000"
        return [
            CallEvent(
                kind=Kind.RECORDING_READY if ready else Kind.UNKNOWN,
                call_key=_text(p["entry_id"]),
                leg=_text(p.get("call_id")),
                seq=_number(p, "seq", MAX_SEQ),
                at=_time(p, "timestamp"),
                extension=_text(p.get("extension")),
                recording_id=_text(p["recording_id"]),
                reason=code,
                command_id=_text(p.get("command_id")),
                raw_type=f"{path}:{state}",
            )
        ]

    def _parse_record_added(self, path: str, p: Payload) -> list[CallEvent]:
        # Sent once the file is in cloud storage: the reliable trigger. The doc warns the file
        # may still lag behind the event, so downloads retry (VPBX API §3.1.8).
        _require(p, "entry_id", "recording_id")
        return [
            CallEvent(
                kind=Kind.RECORDING_READY,
                call_key=_text(p["entry_id"]),
                at=_time(p, "timestamp"),
                recording_id=_text(p["recording_id"]),
                raw_type=path,
            )
        ]

    def _parse_other(self, path: str, p: Payload) -> list[CallEvent]:
        """dtmf, sms, record/tagged, result/<command> and paths we do not know: kept, no effect."""
        return [
            CallEvent(
                kind=Kind.UNKNOWN,
                call_key=_text(p.get("entry_id")),
                command_id=_text(p.get("command_id")),
                raw_type=path,
            )
        ]

    PARSERS: ClassVar[dict[str, Callable[[Mango, str, Payload], list[CallEvent]]]] = {
        "events/call": _parse_call,
        "events/summary": _parse_summary,
        "events/recording": _parse_recording,
        "events/record/added": _parse_record_added,
    }

    @classmethod
    def status_code(cls, reason: str) -> str:
        """Bitrix24 STATUS_CODE for a Mango disconnect_reason; "OTHER" when not a known code."""
        return code_class_lookup(cls.DISCONNECT_STATUS, reason) or "OTHER"

    @classmethod
    def result_meaning(cls, result: str) -> str:
        return code_class_lookup(cls.RESULT_MEANINGS, result) or "unknown result code"

    @classmethod
    def result_is_permanent(cls, result: str) -> bool:
        """Unknown or missing codes (an HTML error page, a proxy's 502) count as temporary."""
        return bool(code_class_lookup(cls.RESULT_PERMANENT, result))

    # Outbound -------------------------------------------------------------------------------

    def originate(
        self,
        connection: ConnectionLike,
        extension: str,
        number: str,
        command_id: str,
        line_number: str = "",
    ) -> None:
        """commands/callback (VPBX API §3.2.1): Mango rings the employee, then dials `number`.
        The outcome of the call itself arrives later as events carrying `command_id`."""
        payload: Payload = {
            "command_id": command_id,
            "from": {"extension": extension},
            "to_number": number,
        }
        if line_number:
            payload["line_number"] = line_number
        answer = self._post(connection, "commands/callback", payload)
        result = _result(answer)
        if answer.status_code == 200 and result == "1000":
            return
        raise ProviderError(
            self._refusal("the click-to-call (commands/callback)", answer, result),
            permanent=self.result_is_permanent(result),
        )

    def fetch_recording(self, connection: ConnectionLike, recording_id: str) -> Recording:
        """queries/recording/post (VPBX API §3.5.1) answers 302 to a one-time file link: the
        link dies after the first GET, so it is followed at once and never stored or shown."""
        payload = {"recording_id": recording_id, "action": "download"}
        answer = self._post(connection, "queries/recording/post", payload, follow=False)
        location = answer.headers.get("Location", "")
        if answer.status_code in REDIRECTS and location:
            answer = self._download(urljoin(answer.url, location), recording_id)
        if answer.status_code != 200 or not answer.content or _is_json(answer):
            result = _result(answer) if _is_json(answer) else ""
            permanent = self.result_is_permanent(result)
            raise ProviderError(
                self._unavailable(recording_id, answer, result, permanent), permanent=permanent
            )
        return Recording(
            filename=self._recording_filename(recording_id, answer), content=answer.content
        )

    def _post(
        self, connection: ConnectionLike, endpoint: str, payload: Payload, follow: bool = True
    ) -> requests.Response:
        api_key, salt = _credentials(connection, error=ProviderError)
        url = _api_url(connection) + endpoint
        try:
            with public_http.session() as http:
                answer = http.post(
                    url,
                    data=signed_form(api_key, salt, payload),
                    timeout=TIMEOUT,
                    allow_redirects=follow,
                )
        except public_http.PrivateAddress as exc:
            raise ProviderError(public_http.refusal(exc), permanent=True) from None
        except requests.RequestException as exc:
            raise ProviderError(f"Mango API at {url} unreachable: {type(exc).__name__}") from exc
        if answer.status_code in self.HTTP_ERRORS:
            raise ProviderError(self.HTTP_ERRORS[answer.status_code])
        return answer

    def _download(self, link: str, recording_id: str) -> requests.Response:
        try:
            with public_http.session() as http:
                answer = http.get(link, timeout=TIMEOUT)
        except public_http.PrivateAddress as exc:
            raise ProviderError(public_http.refusal(exc), permanent=True) from None
        except requests.RequestException as exc:
            # str(exc) would contain the one-time link: name the error class only.
            raise ProviderError(
                f"recording {recording_id}: download failed ({type(exc).__name__})"
            ) from None
        if answer.status_code in self.HTTP_ERRORS:
            raise ProviderError(self.HTTP_ERRORS[answer.status_code])
        return answer

    def _refusal(self, what: str, answer: requests.Response, result: str) -> str:
        if not result:
            return f"Mango answered HTTP {answer.status_code} without a result code to {what}"
        http = "" if answer.status_code == 200 else f", HTTP {answer.status_code}"
        return f"Mango refused {what}: result {result} ({self.result_meaning(result)}{http})"

    def _unavailable(
        self, recording_id: str, answer: requests.Response, result: str, permanent: bool
    ) -> str:
        detail = f", result {result}: {self.result_meaning(result)}" if result else ""
        status = "refused by Mango" if permanent else "not available yet"
        return f"recording {recording_id} {status} (HTTP {answer.status_code}{detail})"

    def _recording_filename(self, recording_id: str, answer: requests.Response) -> str:
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        extension = self.RECORDING_TYPES.get(content_type, "mp3")
        return f"{re.sub(r'[^A-Za-z0-9._-]', '_', recording_id)}.{extension}"


# Helpers ------------------------------------------------------------------------------------


def _path(hook: Webhook) -> str:
    return hook.path.strip("/")


def _form(hook: Webhook) -> dict[str, str]:
    """The form fields as sent; parsed from the raw body when the caller did not."""
    if hook.form or not hook.body:
        return hook.form
    try:
        return dict(parse_qsl(hook.body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise WebhookRejected(400, "body is not UTF-8 form data", field="body") from None


def _payload(hook: Webhook) -> Payload:
    text = _form(hook).get("json")
    if not text:
        raise WebhookRejected(400, "json is required", field="json")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "json is not a JSON object", field="json")
    problem = storable.find_problem(payload)
    if problem:
        name = storable.shorten(".".join(("json", *problem.path)))
        raise WebhookRejected(400, f"{name} {problem.reason}", field=name)
    return payload


def _credentials(
    connection: ConnectionLike, error: Callable[[str], Exception] | None = None
) -> tuple[str, str]:
    credentials = connection.credentials or {}
    api_key, salt = credentials.get("api_key") or "", credentials.get("api_salt") or ""
    if not (api_key and salt):
        message = "this connection has no api_key/api_salt: fill in its Mango credentials"
        raise error(message) if error else WebhookRejected(403, message)
    return api_key, salt


def _same(given: str, expected: str) -> bool:
    # bytes: compare_digest rejects non-ASCII str, and the sender controls `given`
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _api_url(connection: ConnectionLike) -> str:
    return (getattr(connection, "api_url", "") or Mango.default_api_url).rstrip("/") + "/"


def _require(payload: Payload, *names: str) -> None:
    for name in names:
        if payload.get(name) in (None, ""):
            raise WebhookRejected(400, f"json.{name} is required", field=f"json.{name}")


def _side(payload: Payload, name: str) -> dict[str, Any]:
    side = payload.get(name)
    return side if isinstance(side, dict) else {}


def _shape(sides: Mapping[str, Mapping[str, Any]]) -> tuple[bool, bool]:
    return bool(_text(sides["from"].get("extension"))), bool(_text(sides["to"].get("extension")))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(p: Payload, name: str, maximum: int) -> int:
    """A whole number from 0 to `maximum`; absent or empty is 0. Mango's examples send numbers
    both as JSON numbers and as strings ("seq": "1"). Anything else (text, an object, `1e400`
    which JSON reads as infinity, a 5,000-digit number) is refused, naming the field."""
    value = p.get(name)
    if value is None or value == "":
        return 0
    try:
        number = None if isinstance(value, bool) else int(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not 0 <= number <= maximum:
        raise WebhookRejected(
            400, f"json.{name} must be a whole number from 0 to {maximum}", field=f"json.{name}"
        )
    return number


def _time(p: Payload, name: str) -> float | None:
    """Epoch seconds (the doc labels them UTC+3, they are plain Unix time); 0 = not given."""
    seconds = _number(p, name, LATEST_TIME)
    return float(seconds) if seconds > 0 else None


def _result(answer: requests.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return ""
    return _text(body.get("result")) if isinstance(body, dict) else ""


def _is_json(answer: requests.Response) -> bool:
    return "json" in answer.headers.get("Content-Type", "").lower()
