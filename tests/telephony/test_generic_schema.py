"""The generic webhook format in the OpenAPI schema the app serves: a body per event, the
signature headers, and bodies the schema describes are the ones the endpoint accepts."""

import json

import pytest

from telephony.providers.generic import EVENTS


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    from django.test import Client

    with django_db_blocker.unblock():
        answer = Client().get("/api/schema/?format=json")
    return json.loads(answer.content)


def test_a_request_body_per_event_keyed_by_event(schema):
    hook = schema["paths"]["/telephony/hooks/{hook}/"]["post"]
    body = hook["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/GenericPbxEvent"}
    generic = schema["components"]["schemas"]["GenericPbxEvent"]
    assert generic["discriminator"]["propertyName"] == "event"
    assert set(generic["discriminator"]["mapping"]) == set(EVENTS)
    recording = schema["components"]["schemas"]["GenericRecordingEvent"]
    assert {"call_id", "event", "recording_url"} <= set(recording["required"])
    ended = schema["components"]["schemas"]["GenericEndedEvent"]
    assert {"duration", "status", "seq", "timestamp"} <= set(ended["properties"])


def test_the_signature_headers_are_described(schema):
    hook = schema["paths"]["/telephony/hooks/{hook}/"]["post"]
    headers = {p["name"]: p for p in hook["parameters"] if p["in"] == "header"}
    assert set(headers) == {"X-Timestamp", "X-Signature"}
    assert "HMAC-SHA256" in headers["X-Signature"]["description"]
