"""Pages of the fake Bitrix24 for people (`make demo`): what the portal received per call, and
a launcher that opens the app inside the portal the way Bitrix24 does (a frame POST).

`call_log()` reads what the fake recorded: REST calls the app made (register, show, hide,
finish, attachRecord) and the calls Bitrix24 registered itself (click-to-call from the CRM).
Stdlib only, like the fake.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from tests.fakes.bitrix24 import Call, FakeBitrix24, FakePortal

TELEPHONY = "telephony.externalcall."
# Bitrix24's finish status codes in words (REST docs: telephony.externalCall.finish).
STATUS_WORDS = {
    "200": "answered",
    "304": "missed",
    "486": "busy",
    "603": "declined",
    "403": "forbidden",
    "404": "wrong number",
    "480": "unavailable",
    "484": "not reachable",
    "503": "line unavailable",
    "OTHER": "failed",
}
CALL_TYPES = {1: "outgoing", 2: "incoming", 3: "incoming, redirected", 4: "callback", 5: "info"}


@dataclass
class HtmlPage:
    """What a page route returns instead of a JSON payload."""

    body: str
    content_type: str = "text/html; charset=utf-8"


# A stand-in for Bitrix24's JS SDK inside the fake portal's frame (no internet needed).
SDK_STUB = """window.BX24 = {init: function (cb) { setTimeout(cb, 0); },
  installFinish: function () {}, fitWindow: function () {}, resizeWindow: function () {},
  getAuth: function () { return false; }, callMethod: function () {}};"""


@dataclass
class ReceivedCall:
    """One call as the portal saw it."""

    call_id: str
    external_call_id: str = ""
    phone: str = ""
    line: str = ""  # LINE_NUMBER: which line (so which PBX) the call came through
    call_type: int = 0
    registered_by: str = "app"  # "app" or "Bitrix24" (click-to-call from the CRM)
    events: list[tuple[str, list[int]]] = field(default_factory=list)  # ("show", [11, 12])
    finish: dict[str, Any] | None = None  # {"user", "status", "duration", "reason"}
    records: list[str] = field(default_factory=list)

    def shown_to(self) -> list[int]:
        """Everyone the card was ever shown to, in order."""
        seen: list[int] = []
        for verb, users in self.events:
            seen += [u for u in users if verb == "show" and u not in seen]
        return seen

    def hidden_from(self) -> list[int]:
        hidden: list[int] = []
        for verb, users in self.events:
            hidden += [u for u in users if verb == "hide" and u not in hidden]
        return hidden


def _users(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [int(v) for v in values if str(v).strip().isdigit()]


def _on_register(log: dict[str, ReceivedCall], call: Call) -> None:
    call_id = str((call.result or {}).get("CALL_ID") or "")
    if not call_id:
        return
    params = call.params
    entry = log.setdefault(call_id, ReceivedCall(call_id))
    entry.external_call_id = str(params.get("EXTERNAL_CALL_ID") or "")
    entry.phone = str(params.get("PHONE_NUMBER") or "")
    entry.line = str(params.get("LINE_NUMBER") or "")
    entry.call_type = int(str(params.get("TYPE") or 0))
    shown = str(params.get("SHOW", "1")).strip().lower() not in {"0", "n", "false"}
    if shown:
        entry.events.append(("show", _users(params.get("USER_ID"))))


def _on_visibility(verb: str) -> Any:
    def apply(log: dict[str, ReceivedCall], call: Call) -> None:
        entry = log.get(str(call.params.get("CALL_ID") or ""))
        if entry is not None:
            entry.events.append((verb, _users(call.params.get("USER_ID"))))

    return apply


def _on_finish(log: dict[str, ReceivedCall], call: Call) -> None:
    call_id = str(call.params.get("CALL_ID") or "")
    result = call.result or {}
    entry = log.setdefault(call_id, ReceivedCall(call_id, registered_by="Bitrix24"))
    entry.external_call_id = entry.external_call_id or str(result.get("EXTERNAL_CALL_ID") or "")
    entry.phone = entry.phone or str(result.get("PHONE_NUMBER") or "")
    entry.line = entry.line or str(result.get("PORTAL_NUMBER") or "")  # a CRM click's line
    entry.call_type = entry.call_type or int(str(result.get("INCOMING") or 0))
    entry.finish = {
        "user": int(result.get("PORTAL_USER_ID") or 0),
        "status": str(result.get("CALL_FAILED_CODE") or ""),
        "duration": int(result.get("CALL_DURATION") or 0),
        "reason": str(result.get("CALL_FAILED_REASON") or ""),
    }


def _on_record(log: dict[str, ReceivedCall], call: Call) -> None:
    entry = log.get(str(call.params.get("CALL_ID") or ""))
    if entry is not None:
        entry.records.append(str(call.params.get("FILENAME") or "(upload)"))


_APPLY = {
    "register": _on_register,
    "show": _on_visibility("show"),
    "hide": _on_visibility("hide"),
    "finish": _on_finish,
    "attachrecord": _on_record,
}


def call_log(fake: FakeBitrix24, member_id: str) -> list[ReceivedCall]:
    """Every call of the portal, in the order the portal first heard of it."""
    log: dict[str, ReceivedCall] = {}
    with fake._lock:
        calls = [c for c in fake.calls if c.ok and c.member_id == member_id]
        uploads = {cid: recs for cid, recs in fake.portal(member_id).records.items()}
    for call in calls:
        verb = call.method.lower().removeprefix(TELEPHONY)
        if call.method.lower().startswith(TELEPHONY) and verb in _APPLY:
            _APPLY[verb](log, call)
    for call_id, records in uploads.items():  # upload-URL mode attaches outside REST
        entry = log.get(call_id)
        if entry is not None and len(records) > len(entry.records):
            entry.records = [r.get("filename", "") for r in records]
    return list(log.values())


# Pages ------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 sans-serif;margin:0;background:#eef2f4;color:#333}
header{background:#2fc6f6;color:#fff;padding:10px 16px;font-size:18px}
main{padding:16px}table{border-collapse:collapse;background:#fff;width:100%}
td,th{border:1px solid #dde3e6;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f5f7f8}.ok{color:#1a7f37}.miss{color:#b42318}small{color:#777}
iframe{width:100%;height:80vh;border:1px solid #cfd8dc;background:#fff}
"""


def _page(title: str, content: str) -> HtmlPage:
    return HtmlPage(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><header>Bitrix24 (fake) — {html.escape(title)}"
        f"</header><main>{content}</main></body></html>"
    )


def _name(portal: FakePortal, user_id: int) -> str:
    user = portal.find_user("ID", user_id) or {}
    return str(user.get("NAME") or f"user {user_id}")


def _names(portal: FakePortal, users: list[int]) -> str:
    return ", ".join(_name(portal, u) for u in users) or "—"


def _finish_cell(portal: FakePortal, finish: dict[str, Any] | None) -> str:
    if finish is None:
        return "<em>not finished yet</em>"
    status = finish["status"]
    css = "ok" if status == "200" else "miss"
    words = STATUS_WORDS.get(status, "failed")
    reason = f"<br><small>{html.escape(finish['reason'])}</small>" if finish["reason"] else ""
    return (
        f"<span class='{css}'>{html.escape(status)} {words}</span>, {finish['duration']} s, "
        f"for {html.escape(_name(portal, finish['user']))}{reason}"
    )


def _line_cell(portal: FakePortal, number: str) -> str:
    """The external line as the portal has it (telephony.externalLine.add): its name says
    which PBX the line belongs to."""
    if not number:
        return "—"
    name = (portal.lines.get(number) or {}).get("NAME") or ""
    return f"{html.escape(number)}<br><small>{html.escape(name)}</small>"


def _call_row(portal: FakePortal, call: ReceivedCall) -> str:
    kind = CALL_TYPES.get(call.call_type, "?")
    who = "the app" if call.registered_by == "app" else "Bitrix24 itself (CRM click)"
    return (
        f"<tr><td>{html.escape(call.phone)}<br><small>{kind}; registered by {who}<br>"
        f"{html.escape(call.external_call_id)}</small></td>"
        f"<td>{_line_cell(portal, call.line)}</td>"
        f"<td>{html.escape(_names(portal, call.shown_to()))}</td>"
        f"<td>{html.escape(_names(portal, call.hidden_from()))}</td>"
        f"<td>{_finish_cell(portal, call.finish)}</td>"
        f"<td>{html.escape(', '.join(call.records)) or '—'}</td></tr>"
    )


def calls_page(fake: FakeBitrix24) -> HtmlPage:
    sections = []
    for portal in fake.portals:
        rows = "".join(_call_row(portal, c) for c in call_log(fake, portal.member_id))
        sms = "".join(
            f"<tr><td>{html.escape(s['CODE'])}</td><td>{html.escape(s['MESSAGE_ID'])}</td>"
            f"<td>{html.escape(s['STATUS'])}</td></tr>"
            for s in portal.message_statuses
        )
        sections.append(
            f"<h2>{html.escape(portal.domain)} <small>member_id {html.escape(portal.member_id)}"
            "</small></h2><table><tr><th>call</th><th>line (PBX)</th><th>card shown to</th>"
            "<th>card hidden from</th><th>finished</th><th>recordings</th></tr>"
            f"{rows or '<tr><td colspan=6>no calls yet</td></tr>'}</table>"
            + (
                "<h3>SMS statuses <small>(messageservice.message.status.update, in the order "
                "received)</small></h3><table><tr><th>sender</th><th>message</th><th>status</th>"
                f"</tr>{sms}</table>"
                if sms
                else ""
            )
        )
    intro = (
        "<p>What Bitrix24 received from the app, per call: the proof that the bridge did its "
        "job. Reload to see new calls.</p>"
    )
    return _page("what Bitrix24 received", intro + "".join(sections))


def launcher_page(fake: FakeBitrix24, portal: FakePortal, app_url: str, lang: str) -> HtmlPage:
    """The app in the portal's frame: Bitrix24 POSTs the signed-in user's tokens to the
    application URL inside an iframe (REST docs: app frame). The portal's admin (user 1)
    opens it."""
    session = portal.sign_in(1)
    query = urlencode({"DOMAIN": portal.domain, "PROTOCOL": "0", "LANG": lang, "APP_SID": "demo"})
    fields = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in portal.frame_payload(session=session).items()
    )
    action = html.escape(f"{app_url}?{query}")
    content = (
        f'<form id="frame" method="post" target="app" action="{action}">{fields}</form>'
        '<iframe name="app" title="application"></iframe>'
        '<script>document.getElementById("frame").submit();</script>'
    )
    return _page(f"{portal.domain}: application", content)


def page_for(fake: FakeBitrix24, path: str, app_url: str | None) -> tuple[int, Any]:
    """`/portal/calls/` and `/portal/<member_id>/app/`."""
    parts = [p for p in path.split("/") if p]
    if parts == ["portal", "bx24.js"]:
        return 200, HtmlPage(SDK_STUB, "application/javascript")
    if parts == ["portal", "calls"]:
        return 200, calls_page(fake)
    if len(parts) == 3 and parts[2] == "app" and app_url:
        portal = next((p for p in fake.portals if p.member_id == parts[1]), None)
        if portal is not None:
            return 200, launcher_page(fake, portal, app_url, "ru")
    return 404, {"error": "NOT_FOUND", "error_description": json.dumps(path)}
