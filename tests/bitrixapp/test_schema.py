"""The OpenAPI schema at /api/schema/ and its browsable page at /api/docs/ (no CDN needed)."""

import json
import re

import pytest
from django.core.management import call_command

ENDPOINTS = {
    "/bitrix/install/": "bitrix_install",
    "/bitrix/app/": "bitrix_app_page",
    "/bitrix/events/": "bitrix_events",
    "/telephony/hooks/{hook}/": "pbx_webhook",
    "/telephony/hooks/{hook}/{subpath}": "pbx_webhook_below",
    "/sms/send/{hook}/": "sms_handler",
    "/sms/dlr/{hook}/": "sms_delivery_report",
}


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    from django.test import Client

    with django_db_blocker.unblock():
        answer = Client().get("/api/schema/?format=json")
    assert answer.status_code == 200
    return json.loads(answer.content)


def test_the_schema_validates_without_warnings(tmp_path):
    # --fail-on-warn: a warning (e.g. two operations with one id) fails the test too.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))
    assert "openapi: 3" in (tmp_path / "s.yaml").read_text()


def test_the_schema_lists_the_inbound_endpoints(schema):
    assert schema["openapi"].startswith("3.")
    operations = {path: item["post"]["operationId"] for path, item in schema["paths"].items()}
    assert operations == ENDPOINTS  # and nothing else (no admin, no health checks)


def test_request_bodies_and_json_errors_are_described(schema):
    install = schema["paths"]["/bitrix/install/"]["post"]
    form = install["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert "AUTH_ID" in form["oneOf"][0]["properties"]
    assert "auth[application_token]" in form["oneOf"][1]["properties"]
    assert set(install["responses"]["200"]["content"]) == {"text/html", "application/json"}
    hook = schema["paths"]["/telephony/hooks/{hook}/"]["post"]
    mango = hook["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert mango["required"] == ["vpbx_api_key", "sign", "json"]
    for status in ("400", "403", "404", "410", "413"):
        content = hook["responses"][status]["content"]["application/json"]["schema"]
        assert content == {"$ref": "#/components/schemas/ApiError"}, status
    error = schema["components"]["schemas"]["ApiError"]
    assert set(error["properties"]) == {"error", "detail", "field"}
    assert sorted(error["required"]) == ["detail", "error"]


@pytest.mark.django_db
def test_the_docs_page_answers_and_loads_nothing_from_outside(client):
    answer = client.get("/api/docs/")
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "/api/schema/" in page
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("drf_spectacular_sidecar/swagger-ui-dist/" in s for s in scripts), scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
