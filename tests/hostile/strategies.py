"""Hypothesis strategies for hostile requests to every inbound endpoint.

Most generated requests carry valid credentials (the installed portal's application token, a
correct Mango signature), so that they get past authentication into decoding and storage,
where the 500s used to be.
"""

import copy
import hashlib
import hmac
import time
from typing import Any

from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from hypothesis import strategies as st

from bitrixapp.formdata import parse_bracketed
from tests.fakes import generic as generic_fake
from tests.fakes import mtt as mtt_fake
from tests.fakes.mango import fixture, fixture_names
from tests.hostile.probe import (
    APP_TOKEN,
    FORM,
    GENERIC_HOOKS,
    GENERIC_SECRET,
    GONE_APP_TOKEN,
    GONE_MEMBER_ID,
    HOOK,
    HOOKS,
    JSON,
    MEMBER_ID,
    MTT_HOOKS,
    MTT_SECRET,
    SMS_DLR,
    SMS_SEND,
    Hostile,
    RawJson,
    event_form,
    form_body,
    frame_form,
    json_text,
    mango_body,
    onappinstall,
)

EVENTS, INSTALL, APP = "/bitrix/events/", "/bitrix/install/", "/bitrix/app/"

# ------------------------------------------------------------------ values

EVIL_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\ud800",
            "x\udfffy",
            "x" * 300,
            "ß" * 40,
            "1e400",
            "-1",
            "9" * 40,
            "%00",
            "[]",
            "{}",
            "\u202e",
            "m1",
            "apptok",
            "ONAPPUNINSTALL",
        ]
    ),
)
# JSON number texts json.dumps cannot produce, and the values around the limits.
EVIL_NUMBER = st.sampled_from(
    [
        RawJson(text)
        for text in (
            "1e400",
            "-1e400",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e20",
            "100000000000000000000",
            "-1",
            "0",
            "1.5",
            "-0.0",
            "4102444801",
            "2147483648",
            "9" * 400,
            "true",
            "null",
        )
    ]
)
EVIL_LEAF = st.one_of(
    EVIL_TEXT,
    EVIL_NUMBER,
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
EVIL_JSON = st.recursive(
    EVIL_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(EVIL_TEXT, children, max_size=3)
    ),
    max_leaves=8,
)
# Past our depth limit, and past the interpreter's recursion limit.
DEEP_JSON = st.one_of(st.sampled_from([17, 1100, 3000]), st.integers(10, 1200)).map(
    lambda n: RawJson("[" * n + "]" * n)
)

# ------------------------------------------------------------------ form fields

_NAMES = st.sampled_from(["data", "ts", "event_handler_id", "x", "PLACEMENT", "data[CLEAN]"])
_PARTS = st.sampled_from(["[]", "[x]", "[CLEAN]", "[0]", "[", "]", "[[", "[a]b", "[\x00]", ""])
EVIL_KEY = st.one_of(
    st.builds(lambda name, parts: name + "".join(parts), _NAMES, st.lists(_PARTS, max_size=4)),
    st.integers(0, 40).map(lambda depth: "data" + "[x]" * depth),
    EVIL_TEXT.map(lambda text: "data" + text),
)
EVIL_FIELDS = st.lists(st.tuples(EVIL_KEY, EVIL_TEXT), max_size=6)

# Fields bitrixapp/install.py reads (see INSTALL_CASES in cases.py).
INSTALL_FIELDS = ("auth", "member_id", "AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "SERVER_ENDPOINT")
INSTALL_FIELDS += ("APPLICATION_TOKEN", "APPLICATION_SCOPE", "status", "event")


def _not_install_field(pair: tuple[str, str]) -> bool:
    return not pair[0].startswith(INSTALL_FIELDS)


# ------------------------------------------------------------------ requests


@st.composite
def event_requests(draw: st.DrawFn) -> Hostile:
    """POST /bitrix/events/: events of the installed portal, some of another or forged."""
    name = draw(
        st.one_of(
            st.sampled_from(
                ["ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART", "ONAPPUNINSTALL", "ONCRMLEAD"]
            ),
            EVIL_TEXT.filter(lambda text: text.upper() != "ONAPPINSTALL"),
        )
    )
    member_id, token = draw(
        st.sampled_from(
            [(MEMBER_ID, APP_TOKEN)] * 4
            + [(GONE_MEMBER_ID, GONE_APP_TOKEN), (MEMBER_ID, "forged"), ("nobody", "x")]
        )
    )
    if draw(st.booleans()):
        pairs = [
            ("event", name),
            ("auth[member_id]", member_id),
            ("auth[application_token]", token),
            *draw(EVIL_FIELDS),
        ]
        return Hostile(EVENTS, form_body(draw(st.permutations(pairs))))
    tree = {
        "event": name,
        "auth": {"member_id": member_id, "application_token": token},
        "data": draw(st.one_of(EVIL_JSON, DEEP_JSON)),
    }
    _swap_one(draw, tree, ["event", "auth", "data", "ts"])
    return Hostile(EVENTS, json_text(tree).encode("utf-8"), JSON)


@st.composite
def install_requests(draw: st.DrawFn) -> Hostile:
    """The install frame POST, ONAPPINSTALL and the app page, with hostile fields beside the
    ones install.py reads (those have their own test)."""
    extra = draw(EVIL_FIELDS.map(lambda pairs: [p for p in pairs if _not_install_field(p)]))
    shape = draw(st.sampled_from(["event", "frame", "app"]))
    if shape == "event":
        path, pairs = draw(st.sampled_from([INSTALL, EVENTS])), onappinstall()
    else:
        member_id = MEMBER_ID if shape == "app" else "m9"
        path = f"{INSTALL if shape == 'frame' else APP}?DOMAIN=acme.bitrix24.ru&PROTOCOL=1"
        pairs = frame_form(member_id)
    pairs = [*pairs, *extra]
    if draw(st.booleans()):
        return Hostile(path, form_body(pairs))
    try:
        tree = parse_bracketed(pairs)
    except ValueError:
        tree = dict(pairs)
    tree["data"] = draw(st.one_of(EVIL_JSON, DEEP_JSON))
    return Hostile(path, json_text(tree).encode("utf-8", "surrogatepass"), JSON)


_AUTH_KEYS = ["member_id", "domain", "client_endpoint", "server_endpoint", "access_token"]
_AUTH_KEYS += ["refresh_token", "application_token", "expires_in", "scope", "status", "user_id"]
_FRAME_KEYS = ["member_id", "AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "SERVER_ENDPOINT"]
_FRAME_KEYS += ["APPLICATION_TOKEN", "APPLICATION_SCOPE", "status"]
_DOMAINS = ["acme.bitrix24.ru", "x..y", "a" * 64 + ".ru", "-a.ru", "a.ru:99999", "", "a b"]


@st.composite
def install_field_requests(draw: st.DrawFn) -> Hostile:
    """Hostile values in the fields bitrixapp/install.py reads."""
    if draw(st.booleans()):
        auth = {key: draw(st.one_of(EVIL_TEXT, EVIL_JSON)) for key in _pick(draw, _AUTH_KEYS)}
        pairs = onappinstall()
        tree = parse_bracketed(pairs)
        tree["auth"].update(auth)
        return Hostile(INSTALL, json_text(tree).encode("utf-8", "surrogatepass"), JSON)
    fields = {key: draw(EVIL_TEXT) for key in _pick(draw, _FRAME_KEYS)}
    domain = draw(st.one_of(st.sampled_from(_DOMAINS), EVIL_TEXT))
    query = form_body([("DOMAIN", domain), ("PROTOCOL", draw(st.sampled_from(["1", "0", "2"])))])
    path = draw(st.sampled_from([INSTALL, APP]))
    member_id = fields.pop("member_id", "m9")
    return Hostile(f"{path}?{query.decode()}", form_body(frame_form(member_id, **fields)))


def _pick(draw: st.DrawFn, keys: list[str]) -> list[str]:
    return draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))


_MANGO_FIELDS = [
    "seq",
    "timestamp",
    "entry_id",
    "call_id",
    "call_state",
    "call_direction",
    "from",
    "to",
    "from.number",
    "from.extension",
    "to.extension",
    "to.line_number",
    "line_number",
    "talk_time",
    "end_time",
    "create_time",
    "disconnect_reason",
    "command_id",
    "recording_id",
    "recording_state",
    "completion_code",
    "callback_initiator",
    "transfer",
]
_MANGO_PATHS = ["", "events/call", "events/summary", "events/dtmf", "x" * 120, "events/%00"]


@st.composite
def mango_requests(draw: st.DrawFn) -> Hostile:
    """Mango notifications from the fixtures with hostile values, mostly correctly signed."""
    data = fixture(draw(st.sampled_from(fixture_names())))
    path = draw(st.sampled_from([data["path"]] * 4 + _MANGO_PATHS))
    payload: Any = copy.deepcopy(data["json"])
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.one_of(EVIL_NUMBER, EVIL_JSON))
        _set_dotted(payload, draw(st.sampled_from(_MANGO_FIELDS)), value)
    if draw(st.integers(0, 9)) == 0:
        payload = draw(st.one_of(DEEP_JSON, EVIL_JSON))
    text = json_text(payload)
    signer = draw(st.sampled_from(["valid"] * 5 + ["wrong salt", "other key", "unsigned"]))
    body = {
        "valid": lambda: mango_body(text),
        "wrong salt": lambda: mango_body(text, salt="wrong"),
        "other key": lambda: mango_body(text, key="other"),
        "unsigned": lambda: form_body([("json", text)]),
    }[signer]()
    if draw(st.integers(0, 4)) == 0:
        body += b"&" + form_body(draw(EVIL_FIELDS))
    content_type = draw(st.sampled_from([FORM] * 5 + [JSON, "text/plain", ""]))
    return Hostile(HOOKS + path, body, content_type)


_SMS_FIELDS = ["message_id", "message_to", "message_body", "code", "module_id", "bindings"]


@st.composite
def sms_send_requests(draw: st.DrawFn) -> Hostile:
    """Bitrix24 handler calls of an SMS sender, hostile values, mostly with the right token."""
    form: dict[str, Any] = {
        "message_id": "m-1",
        "message_to": "+375 29 123-45-67",
        "message_body": "Hello",
        "code": "mts_sms_by",
        "bindings": [{"OWNER_TYPE_ID": "3", "OWNER_ID": "12"}],
        "auth": {"application_token": APP_TOKEN, "member_id": MEMBER_ID},
    }
    for _ in range(draw(st.integers(0, 3))):
        form[draw(st.sampled_from(_SMS_FIELDS))] = draw(
            st.one_of(EVIL_TEXT, EVIL_NUMBER, EVIL_JSON)
        )
    if draw(st.integers(0, 5)) == 0:
        form["auth"] = draw(st.sampled_from([{"application_token": "forged"}, "x", None]))
    path = draw(st.sampled_from([SMS_SEND] * 6 + [SMS_SEND.rstrip("/"), "/sms/send/x/"]))
    if draw(st.booleans()):
        return Hostile(path, json_text(form).encode("utf-8", "surrogatepass"), JSON)
    pairs = [(k, v) for k, v in _flat(form)] + draw(EVIL_FIELDS)
    return Hostile(path, form_body(pairs), draw(st.sampled_from([FORM] * 4 + [MULTIPART_CONTENT])))


@st.composite
def sms_report_requests(draw: st.DrawFn) -> Hostile:
    """MTS delivery reports: objects, arrays and forms with hostile values."""
    report: dict[str, Any] = {
        "message_id": "x",
        "extra_id": "b24sms-1",
        "status": 2,
        "substatus": 23,
    }
    for _ in range(draw(st.integers(0, 3))):
        key = draw(
            st.sampled_from(["message_id", "extra_id", "status", "substatus", "total_sms_parts"])
        )
        report[key] = draw(st.one_of(EVIL_NUMBER, EVIL_TEXT, EVIL_JSON))
    document: Any = draw(st.sampled_from(["one", "array", "form", "evil"]))
    if document == "form":
        return Hostile(SMS_DLR, form_body([(k, str(v)) for k, v in report.items()]), FORM)
    payload = {"one": report, "array": [report, report], "evil": draw(EVIL_JSON)}[document]
    return Hostile(SMS_DLR, json_text(payload).encode("utf-8", "surrogatepass"), JSON)


def _flat(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return [(prefix, "" if tree is None else str(tree))]
    return [p for k, v in items for p in _flat(v, f"{prefix}[{k}]" if prefix else str(k))]


_MTT_FIELDS = [
    "type",
    "call_id",
    "from_number",
    "to_number",
    "extension",
    "timestamp",
    "duration",
    "direction",
    "record_id",
    "recorded",
    "cli",
    "used_quantity",
]
_GENERIC_FIELDS = [
    "call_id",
    "event",
    "direction",
    "client_number",
    "line",
    "extension",
    "timestamp",
    "duration",
    "status",
    "recording_url",
    "seq",
]


def _hostile_json(draw: st.DrawFn, payload: Any, fields: list[str]) -> str:
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.one_of(EVIL_NUMBER, EVIL_JSON))
        if isinstance(payload, dict):
            _set_dotted(payload, draw(st.sampled_from(fields)), value)
    if draw(st.integers(0, 9)) == 0:
        payload = draw(st.one_of(DEEP_JSON, EVIL_JSON))
    return json_text(payload)


@st.composite
def mtt_requests(draw: st.DrawFn) -> Hostile:
    """MTT notifications from the fixtures with hostile values: signed with the connection's
    secret (header or token), wrongly signed, or unsigned."""
    data = mtt_fake.fixture(draw(st.sampled_from(mtt_fake.fixture_names())))
    body = _hostile_json(draw, copy.deepcopy(data["json"]), _MTT_FIELDS).encode(
        "utf-8", "surrogatepass"
    )
    signer = draw(st.sampled_from(["header"] * 4 + ["token", "wrong", "unsigned"]))
    digest = hmac.new(MTT_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"header": {"HTTP_X_SIGNATURE": digest}, "wrong": {"HTTP_X_SIGNATURE": "0" * 64}}
    query = {"token": {"QUERY_STRING": f"token={MTT_SECRET}"}}
    environ = {**headers.get(signer, {}), **query.get(signer, {})}
    content_type = draw(st.sampled_from([JSON] * 5 + [FORM, "text/plain", ""]))
    return Hostile(MTT_HOOKS, body, content_type, environ=tuple(environ.items()))


@st.composite
def generic_requests(draw: st.DrawFn) -> Hostile:
    """Generic events (one or an array) with hostile values: signed now, signed outside the
    window, with the wrong secret, with odd headers, or unsigned."""
    data = generic_fake.fixture(draw(st.sampled_from(generic_fake.fixture_names())))
    body = _hostile_json(draw, copy.deepcopy(data["json"]), _GENERIC_FIELDS).encode(
        "utf-8", "surrogatepass"
    )
    now = int(time.time())
    signer = draw(st.sampled_from(["valid"] * 4 + ["old", "wrong", "odd", "unsigned"]))
    headers = {
        "valid": lambda: generic_fake.sign(GENERIC_SECRET, body, now),
        "old": lambda: generic_fake.sign(GENERIC_SECRET, body, now - 3600),
        "wrong": lambda: generic_fake.sign("wrong", body, now),
        "odd": lambda: {
            "X-Timestamp": draw(st.sampled_from(["", "-1", "1e9", "9" * 40, "²", str(now)])),
            "X-Signature": draw(
                st.sampled_from(["", "sha256=", "md5=x", "\u00e9", "sha256=" + "0" * 64])
            ),
        },
        "unsigned": lambda: {},
    }[signer]()
    environ = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    content_type = draw(st.sampled_from([JSON] * 5 + [FORM, "text/plain", ""]))
    return Hostile(GENERIC_HOOKS, body, content_type, environ=tuple(environ.items()))


_PATHS = [
    SMS_SEND,
    SMS_DLR,
    "/sms/dlr/00000000-0000-0000-0000-000000000000/",
    MTT_HOOKS,
    GENERIC_HOOKS,
    EVENTS,
    INSTALL,
    APP,
    HOOKS,
    HOOKS + "events/call",
    HOOKS + "events/summary",
    HOOKS.rstrip("/"),
    "/bitrix/events",
    f"/telephony/hooks/{str(HOOK).upper()}/",
    "/telephony/hooks/00000000-0000-0000-0000-000000000000/events/call",
    "/telephony/hooks/not-a-uuid/",
    "/bitrix/%00/",
    "/healthz",
    "/nope",
]
_CONTENT_TYPES = [
    FORM,
    JSON,
    MULTIPART_CONTENT,
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "text/plain",
    "application/xml",
    "",
    "application/json; charset=latin-1",
    "application/json; charset=nonsense",
    f"{FORM}; charset=utf-16",
    f"{FORM}; charset=nonsense",
    "garbage/\x01",
]


@st.composite
def any_requests(draw: st.DrawFn) -> Hostile:
    """Any method, content type and body to any endpoint, with odd headers."""
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            EVIL_FIELDS.map(lambda pairs: form_body([*event_form(), *pairs])),
            EVIL_JSON.map(lambda tree: json_text(tree).encode("utf-8", "surrogatepass")),
            EVIL_FIELDS.map(_multipart),
        )
    )
    environ: dict[str, str] = {}
    if draw(st.integers(0, 3)) == 0:
        environ["CONTENT_LENGTH"] = draw(
            st.one_of(
                st.sampled_from(["abc", "-1", "1e3", "²", " 5", "", "99999999999999999999"]),
                st.integers(0, len(body)).map(str),
            )
        )
    if draw(st.integers(0, 5)) == 0:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if draw(st.integers(0, 5)) == 0:
        environ["HTTP_HOST"] = draw(st.sampled_from(["evil.example", "a b", "[::1", "x" * 300]))
    if draw(st.integers(0, 4)) == 0:
        environ["QUERY_STRING"] = draw(
            st.sampled_from(["a=%00", "%ff%fe", "PROTOCOL=7", "DOMAIN=acme.bitrix24.ru&x[=1"])
        )
    return Hostile(
        path=draw(st.sampled_from(_PATHS)),
        body=body,
        content_type=draw(st.sampled_from(_CONTENT_TYPES)),
        method=draw(st.sampled_from(["POST"] * 4 + ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])),
        environ=tuple(environ.items()),
    )


# ------------------------------------------------------------------ helpers


def _multipart(pairs: list[tuple[str, str]]) -> bytes:
    from django.core.files.uploadedfile import SimpleUploadedFile

    fields: dict[str, Any] = dict(event_form())
    fields.update(
        (k.encode("utf-8", "replace").decode(), v.encode("utf-8", "replace")) for k, v in pairs
    )
    fields["data[FILE]"] = SimpleUploadedFile("a.txt", b"text")
    return encode_multipart(BOUNDARY, fields)


def _swap_one(draw: st.DrawFn, tree: dict[str, Any], keys: list[str]) -> None:
    if draw(st.booleans()):
        tree[draw(st.sampled_from(keys))] = draw(EVIL_JSON)


def _set_dotted(payload: Any, dotted: str, value: Any) -> None:
    if not isinstance(payload, dict):
        return
    *parents, name = dotted.split(".")
    node = payload
    for parent in parents:
        if not isinstance(node.get(parent), dict):
            node[parent] = {}
        node = node[parent]
    node[name] = value
