"""Answer 503 (not 500) while the database is unreachable, so that senders retry.

Every inbound endpoint stores before it answers. When PostgreSQL
refuses connections or drops them mid-request, nothing was stored (the transaction rolled
back): the honest answer is "temporarily unavailable, send it again", which PBXs, Bitrix24
and SMS gateways treat as retryable, while a 500 reads as "your request broke the server".
"""

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

# Seconds a sender is asked to wait: long enough for a database restart or a failover,
# short enough that a PBX's own retry schedule is not pushed back much.
RETRY_AFTER_S = 5

# What psycopg raises (through Django) for a refused, dropped or closed connection; also
# deadlocks and serialization failures, which are just as transient.
UNAVAILABLE = (OperationalError, InterfaceError)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
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
