"""The hostile requests that once answered 500 (found by probing a running server), each with
the answer it must get now. They seed the property-based suite as explicit examples too."""

from dataclasses import dataclass

from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from tests.fakes.mango import fixture
from tests.hostile.probe import (
    HOOKS,
    JSON,
    Hostile,
    RawJson,
    event_form,
    form_body,
    frame_form,
    json_body,
    mango_body,
    onappinstall,
)


@dataclass(frozen=True)
class Case:
    request: Hostile
    status: int
    error: str = ""  # the `error` code, when it matters
    field: str = ""  # the `field` that must be named


def _event_json(**data: object) -> dict:
    return {
        "event": "ONCRMLEADADD",
        "auth": {"member_id": "m1", "application_token": "apptok"},
        "data": data,
    }


def _call(**fields: object) -> dict:
    payload = fixture("call__appeared_inbound")["json"]
    payload.update(fields)
    return payload


def _summary(**fields: object) -> dict:
    payload = fixture("summary__inbound_answered")["json"]
    payload.update(fields)
    return payload


def _multipart_event() -> bytes:
    from django.core.files.uploadedfile import SimpleUploadedFile

    fields = dict(event_form())
    fields["data[FILE]"] = SimpleUploadedFile("a.txt", b"plain text")
    return encode_multipart(BOUNDARY, fields)


def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


EVENTS, INSTALL, APP = "/bitrix/events/", "/bitrix/install/", "/bitrix/app/"

CASES = {
    # JSON numbers that overflow: 1e400 is infinity, jsonb has none
    "json_infinity": Case(
        Hostile(EVENTS, json_body(_event_json(x=RawJson("1e400"))), JSON), 400, field="data[x]"
    ),
    "json_1100_deep_events": Case(Hostile(EVENTS, _deep_json(1100), JSON), 400, "malformed_body"),
    "json_1100_deep_install": Case(Hostile(INSTALL, _deep_json(1100), JSON), 400),
    "json_100_deep_under_the_recursion_limit": Case(
        Hostile(EVENTS, json_body(_event_json(x=RawJson("[" * 100 + "]" * 100))), JSON),
        400,
        field="data[x][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]",
    ),
    "form_5000_deep": Case(
        Hostile(EVENTS, form_body([*event_form(), ("data" + "[x]" * 5000, "1")])),
        400,
        field="data" + "[x]" * 25 + "[...",
    ),
    "json_lone_surrogate": Case(
        Hostile(EVENTS, json_body(_event_json(x="\ud800")), JSON), 400, field="data[x]"
    ),
    "json_lone_surrogate_in_a_name": Case(
        Hostile(EVENTS, json_body(_event_json(**{"\udfff": "x"})), JSON), 400
    ),
    "uninstall_with_data_a_string": Case(
        Hostile(EVENTS, form_body([*event_form("ONAPPUNINSTALL"), ("data", "x")])),
        400,
        field="data",
    ),
    "uninstall_with_clean_an_object": Case(
        Hostile(
            EVENTS, json_body({**_event_json(CLEAN={"a": 1}), "event": "ONAPPUNINSTALL"}), JSON
        ),
        400,
        field="data[CLEAN]",
    ),
    "multipart_file_in_an_event": Case(
        Hostile(EVENTS, _multipart_event(), MULTIPART_CONTENT), 400, field="data[FILE]"
    ),
    "multipart_without_boundary": Case(
        Hostile(EVENTS, b"--x\r\n", "multipart/form-data"), 400, "malformed_body"
    ),
    "nul_in_a_form_value": Case(
        Hostile(EVENTS, form_body(event_form(**{"data[x]": "a\x00b"}))), 400, field="data[x]"
    ),
    "nul_in_a_form_name": Case(
        Hostile(EVENTS, form_body(event_form(**{"data[a\x00]": "b"}))), 400, field="data[a\x00]"
    ),
    "nul_in_member_id": Case(
        Hostile(EVENTS, json_body({**_event_json(), "auth": {"member_id": "m\x001"}}), JSON),
        400,
        field="auth[member_id]",
    ),
    "raw_nul_byte_in_the_body": Case(
        Hostile(EVENTS, form_body(event_form()) + b"&x=\x00"), 400, field="body"
    ),
    "member_id_an_object": Case(
        Hostile(
            EVENTS,
            json_body({**_event_json(), "auth": {"member_id": {"a": 1}, "application_token": "t"}}),
            JSON,
        ),
        400,
        field="auth[member_id]",
    ),
    "event_name_longer_than_its_column": Case(
        Hostile(EVENTS, form_body(event_form("ONX" + "A" * 100))), 400, field="event"
    ),
    "event_name_longer_than_its_column_after_upper": Case(
        Hostile(EVENTS, form_body(event_form("ß" * 60))), 400, field="event"
    ),
    "more_fields_than_allowed": Case(
        Hostile(EVENTS, form_body([*event_form(), *((f"data[f{i}]", "1") for i in range(1001))])),
        400,
        "too_many_fields",
    ),
    "garbage_content_length": Case(
        Hostile(EVENTS, form_body(event_form()), environ=(("CONTENT_LENGTH", "abc"),)),
        400,
        field="Content-Length",
    ),
    "non_ascii_digit_content_length": Case(
        Hostile(EVENTS, form_body(event_form()), environ=(("CONTENT_LENGTH", "²"),)), 400
    ),
    "chunked_without_content_length": Case(
        Hostile(
            EVENTS,
            form_body(event_form()),
            environ=(("CONTENT_LENGTH", ""), ("HTTP_TRANSFER_ENCODING", "chunked")),
        ),
        411,
        "length_required",
    ),
    "host_not_allowed": Case(
        Hostile(EVENTS, form_body(event_form()), environ=(("HTTP_HOST", "evil.example"),)),
        400,
        "bad_host",
    ),
    "post_without_the_trailing_slash": Case(
        Hostile("/bitrix/events", form_body(event_form())), 404, "not_found"
    ),
    "get_on_a_webhook": Case(Hostile(EVENTS, method="GET"), 405, "method_not_allowed"),
    "put_on_a_pbx_hook": Case(Hostile(HOOKS + "events/call", method="PUT"), 405),
    "unknown_path": Case(Hostile("/bitrix/nope/"), 404, "not_found"),
    "text_plain": Case(Hostile(EVENTS, b"hello", "text/plain"), 415, "unsupported_media_type"),
    # Mango: numbers that overflow now (OverflowError) or later in the pipeline
    "mango_seq_1e400": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(seq=RawJson("1e400")))),
        400,
        field="json.seq",
    ),
    "mango_seq_as_text_1e400": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(seq="1e400"))), 400, field="json.seq"
    ),
    "mango_huge_timestamp": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(timestamp=10**20))),
        400,
        field="json.timestamp",
    ),
    "mango_timestamp_overflowing_datetime_only": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(timestamp=10**12))),
        400,
        field="json.timestamp",
    ),
    "mango_talk_longer_than_an_integer_column": Case(
        Hostile(HOOKS + "events/summary", mango_body(_summary(talk_time=1, end_time=4 * 10**9))),
        400,
        field="json.end_time",
    ),
    "mango_nan": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(seq=RawJson("NaN")))),
        400,
        field="json.seq",
    ),
    "mango_entry_id_longer_than_its_column": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(entry_id="E" * 256))),
        400,
        field="json.entry_id",
    ),
    "mango_number_an_object": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(**{"from": {"number": {"a": 1}}}))),
        400,
        field="json.from.number",
    ),
    "mango_nul_in_entry_id": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(entry_id="E\x00"))),
        400,
        field="json.entry_id",
    ),
    "mango_lone_surrogate": Case(
        Hostile(HOOKS + "events/call", mango_body(_call(entry_id="\ud800"))),
        400,
        field="json.entry_id",
    ),
    "mango_json_1100_deep": Case(
        Hostile(HOOKS + "events/call", mango_body(_deep_json(1100).decode())), 400, field="json"
    ),
    "mango_nul_in_the_url_path": Case(
        Hostile(HOOKS + "events/%00", mango_body(_call())), 400, field="path"
    ),
    "mango_url_path_longer_than_its_column": Case(
        Hostile(HOOKS + "events/" + "x" * 100, mango_body(_call())), 400, field="path"
    ),
    "mango_raw_nul_byte_beside_a_valid_signature": Case(
        Hostile(HOOKS + "events/call", mango_body(_call()) + b"&x=\x00"), 400, field="body"
    ),
    "mango_hook_without_the_trailing_slash": Case(
        Hostile(HOOKS.rstrip("/"), mango_body(_call())), 404, "not_found"
    ),
    "mango_unknown_hook": Case(
        Hostile("/telephony/hooks/00000000-0000-0000-0000-000000000000/", mango_body(_call())),
        404,
    ),
}


# Install values that bitrixapp/install.py once turned into a 500 or a garbage Portal row.
def _install_json(**auth: object) -> dict:
    fields = {key[5:-1]: value for key, value in onappinstall()[1:]}  # "auth[x]" -> "x"
    return {"event": "ONAPPINSTALL", "auth": {**fields, **auth}}


INSTALL_CASES = {
    "install_expires_in_1e17": Case(
        Hostile(INSTALL, form_body(onappinstall(expires_in=str(10**17)))),
        400,
        field="auth[expires_in]",
    ),
    "install_frame_auth_expires_1e17": Case(
        Hostile(f"{INSTALL}?DOMAIN=new.bitrix24.ru", form_body(frame_form(AUTH_EXPIRES="1" * 18))),
        400,
        field="AUTH_EXPIRES",
    ),
    "install_user_id_1e20": Case(
        Hostile(INSTALL, json_body(_install_json(user_id=RawJson("1e20"))), JSON),
        400,
        field="auth[user_id]",
    ),
    "install_client_endpoint_broken_ipv6": Case(
        Hostile(INSTALL, form_body(onappinstall(client_endpoint="http://[x/"))),
        400,
        field="auth[client_endpoint]",
    ),
    "install_domain_empty_label": Case(
        Hostile(INSTALL, form_body(onappinstall(domain="x..y"))), 400, field="auth[domain]"
    ),
    "install_frame_domain_empty_label": Case(
        Hostile(f"{INSTALL}?DOMAIN=x..y", form_body(frame_form())), 400, field="DOMAIN"
    ),
    "install_frame_domain_64_char_label": Case(
        Hostile(f"{INSTALL}?DOMAIN={'a' * 64}.bitrix24.ru", form_body(frame_form())),
        400,
        field="DOMAIN",
    ),
    "install_member_id_an_object": Case(
        Hostile(INSTALL, json_body(_install_json(member_id={"a": 1})), JSON),
        400,
        field="auth[member_id]",
    ),
    "install_domain_a_list": Case(
        Hostile(INSTALL, json_body(_install_json(domain=["a.bitrix24.ru"])), JSON),
        400,
        field="auth[domain]",
    ),
    "install_member_id_longer_than_its_column": Case(
        Hostile(INSTALL, form_body(onappinstall(member_id="m" * 65))),
        400,
        field="auth[member_id]",
    ),
    "install_scope_longer_than_its_column": Case(
        Hostile(INSTALL, form_body(onappinstall(scope="crm," * 200))), 400, field="auth[scope]"
    ),
}

CASES.update(INSTALL_CASES)
