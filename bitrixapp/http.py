"""Shared pieces of every inbound endpoint: JSON errors, size cap, form decoding, secret checks.

Every error answer is JSON: `{"error": "<code>", "detail": "<what is wrong>"}` (+ `field`),
whatever the input; README "Webhook answers" lists the codes.
"""

import hmac
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, ResolverMatch, resolve
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.views import APIView

from bitrixapp import storable
from bitrixapp.formdata import FormDataError, parse_bracketed


class ApiError(exceptions.APIException):
    """An error answered as `{"error": code, "detail": message, "field": field}`."""

    def __init__(self, status_code: int, code: str, detail: str, field: str | None = None):
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code
        self.field = field


def bad_request(detail: str, field: str | None = None) -> ApiError:
    return ApiError(status.HTTP_400_BAD_REQUEST, "invalid_request", detail, field)


def missing(field: str) -> ApiError:
    return ApiError(status.HTTP_400_BAD_REQUEST, "missing_field", f"{field} is required", field)


def forbidden(detail: str) -> ApiError:
    return ApiError(status.HTTP_403_FORBIDDEN, "forbidden", detail)


def not_found(detail: str) -> ApiError:
    return ApiError(status.HTTP_404_NOT_FOUND, "not_found", detail)


def gone(detail: str) -> ApiError:
    return ApiError(status.HTTP_410_GONE, "uninstalled", detail)


# DRF's own exceptions, named in our error vocabulary.
_DRF_CODES = {
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_body",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotFound: "not_found",
}


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"body over the {limit}-byte limit")


def json_exception_handler(exc: Exception, context: dict) -> JsonResponse | None:
    if isinstance(exc, ApiError):
        body: dict[str, Any] = {"error": exc.error_code, "detail": str(exc.detail)}
        if exc.field:
            body["field"] = exc.field
        return JsonResponse(body, status=exc.status_code)
    if isinstance(exc, exceptions.APIException):
        code = _DRF_CODES.get(type(exc), "invalid_request")
        return JsonResponse({"error": code, "detail": str(exc.detail)}, status=exc.status_code)
    return None


def secrets_equal(given: str | None, stored: str | None) -> bool:
    """Constant-time comparison; an empty stored secret never matches."""
    if not given or not stored:
        return False
    return hmac.compare_digest(given.encode(), stored.encode())


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, but JSON nested past the interpreter's recursion limit (a 1,000-deep
    `[[[...]]]` fits in a few kilobytes) is a malformed body, not a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from exc


class InboundEndpoint(APIView):
    """Base for endpoints that other servers POST to: no auth/CSRF, size cap before parsing."""

    parser_classes = [FormParser, MultiPartParser, BoundedJSONParser]
    authentication_classes: list = []
    permission_classes: list = []
    max_body_bytes: int | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        limit = self.max_body_bytes or settings.WEBHOOK_MAX_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH") or ""
        if not declared and _is_chunked(request):
            # Django reads a body without Content-Length as empty: refuse rather than
            # silently answer "field missing" to a body we never saw.
            raise ApiError(411, "length_required", "send the body with a Content-Length header")
        if declared and not (declared.isascii() and declared.isdigit()):
            raise bad_request("Content-Length is not a number", field="Content-Length")
        if int(declared or 0) > limit:
            raise too_large(limit)
        _refuse_nul_bytes(request, limit)
        super().initial(request, *args, **kwargs)

    def form(self, request: Request) -> dict[str, Any]:
        """The body as a nested dict, whether it came form-encoded (brackets) or as JSON;
        checked to be storable as it is (storable.find_problem)."""
        data = _decoded(request)
        if request.FILES:
            name = next(iter(request.FILES))
            raise bad_request(f"{storable.shorten(name)} is a file: uploads are not accepted", name)
        if isinstance(data, dict) and not hasattr(data, "lists"):
            form = data
        elif hasattr(data, "lists"):
            form = _bracketed(data)
        else:
            raise bad_request("body must be a JSON object or form fields")
        problem = storable.find_problem(form)
        if problem:
            name = storable.shorten(storable.bracketed(problem.path))
            raise bad_request(f"{name} {problem.reason}", field=name)
        return form


def _is_chunked(request: Request) -> bool:
    return "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()


def _refuse_nul_bytes(request: Request, limit: int) -> None:
    # No format we accept carries a raw NUL byte (files are refused), and PostgreSQL cannot
    # store one in a text column: refuse it before any raw row is written.
    try:
        body = request.body  # Request passes it through to the HttpRequest (read once, cached)
    except RequestDataTooBig as exc:
        raise too_large(limit) from exc
    if b"\x00" in body:
        raise bad_request("body contains a NUL byte", field="body")


# Django's own refusals while decoding (DATA_UPLOAD_MAX_NUMBER_FIELDS and friends).
_DECODE_REFUSALS: dict[type[SuspiciousOperation], tuple[int, str, str]] = {
    TooManyFieldsSent: (400, "too_many_fields", "more than {fields} fields"),
    TooManyFilesSent: (400, "too_many_fields", "more than {files} files"),
    RequestDataTooBig: (413, "payload_too_large", "body over the size limit"),
}


def _decoded(request: Request) -> Any:
    try:
        return request.data
    except SuspiciousOperation as exc:
        status_code, code, detail = _DECODE_REFUSALS.get(
            type(exc), (400, "invalid_request", "malformed body")
        )
        limits = {
            "fields": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
            "files": settings.DATA_UPLOAD_MAX_NUMBER_FILES,
        }
        raise ApiError(status_code, code, detail.format(**limits)) from exc


def _bracketed(data: Any) -> dict[str, Any]:
    pairs = [(k, v) for k, values in data.lists() for v in values]
    try:
        return parse_bracketed(pairs)
    except FormDataError as exc:
        raise bad_request(str(exc), field=exc.field) from exc


def text(form: dict[str, Any], *path: str, required: bool = True) -> str:
    """A string field from a nested form, e.g. `text(form, "auth", "member_id")`."""
    node: Any = form
    for depth, part in enumerate(path):
        if node is not None and not isinstance(node, dict):
            group = storable.bracketed(path[:depth])
            raise bad_request(f"{group} must be a group of fields ({group}[...])", field=group)
        node = node.get(part) if node is not None else None
    name = storable.bracketed(path)
    if node is None or node == "":
        if required:
            raise missing(name)
        return ""
    if not isinstance(node, str | int | float) or isinstance(node, bool):
        raise bad_request(f"{name} must be a string", field=name)
    return str(node)


def not_found_view(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        {"error": "not_found", "detail": f"no endpoint at {storable.shorten(request.path)}"},
        status=404,
    )


# What an error page of Django's own becomes (status -> error code).
_STATUS_CODES = {
    400: "invalid_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class JsonErrorsMiddleware:
    """Outermost middleware: JSON error answers also where Django answers before, around or
    instead of our views (a Host header not in ALLOWED_HOSTS, a POST to a URL without its
    trailing slash, Django's HTML 400/403/404/500 pages). The admin keeps its own pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/admin/"):
            return self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost:
            return JsonResponse(
                {
                    "error": "bad_host",
                    "detail": "the Host header names a host this server does not serve",
                    "field": "Host",
                },
                status=400,
            )
        if request.method not in ("GET", "HEAD"):
            match = resolved(request.path_info)
            if match is None:
                # Django would redirect to the path with a slash, dropping the body (or
                # raise under DEBUG): the sender should learn the right URL instead.
                return _no_endpoint(request.path_info)
            request.resolver_match = match  # resolved once (ServerEndpointsMiddleware)
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            return _json_error(response)
        return response


def _no_endpoint(path: str) -> JsonResponse:
    detail = f"no endpoint at {storable.shorten(path)}"
    if resolved(path + "/") is not None:
        detail += f"; did you mean {storable.shorten(path)}/ (with the trailing slash)?"
    return JsonResponse({"error": "not_found", "detail": detail}, status=404)


def resolved(path: str) -> ResolverMatch | None:
    """The view a path leads to, None when none does."""
    try:
        return resolve(path)
    except Resolver404:
        return None


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def _json_error(response: HttpResponse) -> JsonResponse:
    status_code = response.status_code
    default = "internal_error" if status_code >= 500 else "invalid_request"
    return JsonResponse(
        {"error": _STATUS_CODES.get(status_code, default), "detail": response.reason_phrase},
        status=status_code,
    )
