"""Webhook URLs are secrets: what the logs keep of them (bitrixapp.logsafe)."""

import io
import logging
import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from bitrixapp.logsafe import masked, masked_query


def test_the_secret_segment_and_query_values_are_hidden_the_route_kept():
    hook = str(uuid.uuid4())
    line = f'"POST /telephony/hooks/{hook}/events/call?api_key=k3y&x=1 HTTP/1.1" 200'
    assert masked(line) == '"POST /telephony/hooks/***/events/call?api_key=***&x=*** HTTP/1.1" 200'
    assert masked(f"Forbidden: /sms/dlr/{hook}/") == "Forbidden: /sms/dlr/***/"
    assert masked_query("api_key=k3y&flag") == "api_key=***&flag"
    assert masked("GET /healthz HTTP/1.1") == "GET /healthz HTTP/1.1"


def _routes(patterns, prefix=""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route


def test_every_route_with_a_secret_in_its_path_is_masked():
    """A new webhook route must be added to SECRET_ROUTES, or its secret would be logged."""
    secret_routes = [
        route for route in _routes(get_resolver().url_patterns) if re.search(r"<(uuid|str):", route)
    ]
    assert {"telephony/hooks/<uuid:hook>/", "sms/dlr/<uuid:hook>/"} <= set(secret_routes)
    for route in secret_routes:
        path = "/" + re.sub(
            r"<path:[^>]+>", "events/call", re.sub(r"<(uuid|str):[^>]+>", "s3cr3t", route)
        )
        assert "s3cr3t" not in masked(path), route


@pytest.mark.django_db
def test_django_logs_a_refused_webhook_without_its_secret(client):
    hook = str(uuid.uuid4())
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
    captured = io.StringIO()
    previous = handler.setStream(captured)
    try:
        answer = client.post(f"/telephony/hooks/{hook}/", b"{}", content_type="application/json")
    finally:
        handler.setStream(previous)
    assert answer.status_code == 404
    assert "/telephony/hooks/***/" in captured.getvalue()
    assert hook not in captured.getvalue()
