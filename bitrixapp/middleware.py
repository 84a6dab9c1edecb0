"""The request cycle of the endpoints other servers call: 503 while the database is
unreachable, and a lean cycle that skips what only people's pages need.

503, not 500: every inbound endpoint stores before it answers. When PostgreSQL refuses
connections or drops them mid-request, nothing was stored (the transaction rolled back): the
honest answer is "temporarily unavailable, send it again", which PBXs, Bitrix24 and SMS
gateways treat as retryable, while a 500 reads as "your request broke the server".
"""

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import translation

from bitrixapp.http import resolved

log = logging.getLogger(__name__)

# Seconds a sender is asked to wait: long enough for a database restart or a failover,
# short enough that a PBX's own retry schedule is not pushed back much.
RETRY_AFTER_S = 5

# What psycopg raises (through Django) for a refused, dropped or closed connection; also
# deadlocks and serialization failures, which are just as transient.
UNAVAILABLE = (OperationalError, InterfaceError)

View = TypeVar("View", bound=Callable[..., Any])


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return unavailable_answer(request, exception)


def unavailable_answer(request: HttpRequest, exception: Exception) -> HttpResponse | None:
    """503 + Retry-After for an exception that says the database is unreachable; else None."""
    if not isinstance(exception, UNAVAILABLE):
        return None
    # The exception text may quote the connection string's host and user, not secrets;
    # log the class only, like /readyz does.
    log.warning(
        "database unavailable (%s): %s answered 503", type(exception).__name__, request.path
    )
    response = JsonResponse(
        {
            "error": "unavailable",
            "detail": "the database is unreachable; nothing was stored, send it again later",
        },
        status=503,
    )
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def server_endpoint(view: View) -> View:
    """Mark a view (a function or a view class) as called only by other servers: it gets the
    lean request cycle of ServerEndpointsMiddleware."""
    view.server_endpoint = True  # type: ignore[attr-defined]
    return view


def _serves_servers(view: Callable[..., Any]) -> bool:
    # as_view() keeps the class on the function it returns (csrf_exempt copies it along).
    return bool(getattr(getattr(view, "view_class", view), "server_endpoint", False))


class ServerEndpointsMiddleware:
    """A lean request cycle for the endpoints only other servers call: PBX webhooks, Bitrix24
    events, the SMS handler, delivery reports and the health checks.

    Their view is called from here and the middleware below is skipped: it serves people's
    pages (static files, sessions, the language of the page, CSRF, login, messages, frame
    options), and these endpoints use none of it. It was 15-20 % of the CPU of a
    webhook's acknowledgement, the path a burst of calls goes through. Their answers are not
    translated (error codes and English details, README "Webhook answers"), so no language
    is chosen. What the skipped part did that still matters is done here: a Content-Length,
    and the 503 of an unreachable database (DatabaseUnavailableMiddleware.process_exception
    never sees an exception raised here)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = request.resolver_match or resolved(request.path_info)
        if match is None or not _serves_servers(match.func):
            return self.get_response(request)
        request.resolver_match = match
        # Other servers read these answers in English. LocaleMiddleware (skipped here) leaves
        # the language of the thread's last page active: a Russian admin page before would
        # make the next webhook's errors Russian.
        translation.activate(settings.LANGUAGE_CODE)
        try:
            response = match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            answer = unavailable_answer(request, exc)
            if answer is None:
                raise
            return answer
        if callable(getattr(response, "render", None)):
            response = response.render()  # a DRF Response, rendered as Django's handler would
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response
