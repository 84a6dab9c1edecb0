"""The lean request cycle of the endpoints other servers call (ServerEndpointsMiddleware):
their view runs without the middleware of people's pages, and answers as before."""

import socket

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

EVENT = {
    "event": "ONEXTERNALCALLSTART",
    "auth[member_id]": "nobody",
    "auth[application_token]": "whatever",
}
# What the skipped middleware adds to every answer it sees: the page's language
# (LocaleMiddleware) and the frame ban (XFrameOptionsMiddleware).
PAGE_HEADERS = ("Content-Language", "X-Frame-Options")


UNKNOWN_HOOK = "00000000-0000-0000-0000-000000000000"
# Every endpoint only other servers call: (method, path). An unknown hook or portal is
# answered by the view itself (404 JSON), so the answer shows which cycle ran it.
SERVER_ENDPOINTS = [
    ("post", "/bitrix/events/"),
    ("post", f"/telephony/hooks/{UNKNOWN_HOOK}/"),
    ("post", f"/telephony/hooks/{UNKNOWN_HOOK}/events/call"),
    ("post", f"/sms/send/{UNKNOWN_HOOK}/"),
    ("post", f"/sms/dlr/{UNKNOWN_HOOK}/"),
    ("get", "/healthz"),
    ("get", "/readyz"),
]


@pytest.mark.parametrize(("method", "path"), SERVER_ENDPOINTS)
def test_server_endpoints_skip_the_middleware_of_pages(client, method, path):
    answer = getattr(client, method)(
        path, EVENT if method == "post" else None, HTTP_ACCEPT_LANGUAGE="ru"
    )
    assert answer.status_code in (200, 404), answer.content
    assert answer["Content-Type"] == "application/json"
    assert not [name for name in PAGE_HEADERS if answer.has_header(name)]
    assert answer["Content-Length"] == str(len(answer.content))


def test_pages_keep_the_full_cycle(client):
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="ru")
    assert page["Content-Language"] == "ru"
    assert page["X-Frame-Options"] == "DENY"


@pytest.mark.django_db(transaction=True)
def test_a_server_endpoint_answers_503_while_the_database_is_unreachable(client):
    """The view is called from the middleware, so DatabaseUnavailableMiddleware's
    process_exception never sees its exceptions: the lean cycle answers 503 itself."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nothing_listens = closed.getsockname()[1]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = nothing_listens
    try:
        response = client.post("/bitrix/events/", EVENT)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"] == "unavailable"


def test_a_server_endpoint_answers_in_english_after_a_russian_page_on_the_same_thread(client):
    page = client.get("/admin/login/", HTTP_ACCEPT_LANGUAGE="ru")
    assert page["Content-Language"] == "ru"
    answer = client.post("/bitrix/events/", "x=1", content_type="text/plain")
    assert answer.status_code == 415
    assert answer.json()["detail"] == 'Unsupported media type "text/plain" in request.'
