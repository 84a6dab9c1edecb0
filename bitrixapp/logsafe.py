"""Secrets that travel in URLs, kept out of log lines.

A PBX connection's and an SMS account's webhook URLs are their secrets (bitrixapp.webhooks):
whoever has one can post as that PBX or gateway. Query strings may carry keys too (a
provider's `api_key`, a demo login token). Django logs the path of every refused request
("Forbidden: /telephony/hooks/<uuid>/") and gunicorn the request line of every request; both
pass through `masked`, which keeps the route and the parameter names and hides the rest, so a
log still tells which endpoint was called and how it was answered.

Nothing here needs Django set up: gunicorn's configuration (gunicorn_conf.py) uses it too.
"""

import logging
import re

HIDDEN = "***"
# The routes whose next path segment is a secret (telephony/urls.py, sms/urls.py, the demo's
# one-time login); tests/bitrixapp/test_logsafe.py checks every such route is listed.
SECRET_ROUTES = ("telephony/hooks", "sms/send", "sms/dlr", "demo/login")
_ROUTES = "|".join(re.escape(route) for route in SECRET_ROUTES)
_SECRET_SEGMENT = re.compile(rf"(/(?:{_ROUTES})/)[^/?#\s\"']+")
_QUERY_VALUE = re.compile(r"([?&][^=&#\s\"']*=)[^&#\s\"']*")


def masked(text: str) -> str:
    """`text` with the secret segments of webhook paths and every query value hidden."""
    return _QUERY_VALUE.sub(rf"\1{HIDDEN}", _SECRET_SEGMENT.sub(rf"\1{HIDDEN}", text))


def masked_query(query: str) -> str:
    """A bare query string ("a=1&b=2") with its values hidden."""
    return masked("?" + query)[1:] if query else query


class MaskSecrets(logging.Filter):
    """On a handler: every record it writes has its webhook secrets hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = masked(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True
