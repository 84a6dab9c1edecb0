"""Shared pieces of every inbound endpoint: JSON errors, size cap, form decoding, secret checks.

Every error answer is JSON: `{"error": "<code>", "detail": "<what is wrong>"}` (+ `field`).
"""

import hmac
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.views import APIView

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


class InboundEndpoint(APIView):
    """Base for endpoints that other servers POST to: no auth/CSRF, size cap before parsing."""

    parser_classes = [FormParser, MultiPartParser, JSONParser]
    authentication_classes: list = []
    permission_classes: list = []
    max_body_bytes: int | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        limit = self.max_body_bytes or settings.WEBHOOK_MAX_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit():
            raise bad_request("Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "payload_too_large", f"body over the {limit}-byte limit")
        super().initial(request, *args, **kwargs)

    def form(self, request: Request) -> dict[str, Any]:
        """The body as a nested dict, whether it came form-encoded (brackets) or as JSON."""
        try:
            data = request.data
        except RequestDataTooBig as exc:
            raise ApiError(413, "payload_too_large", "body over the size limit") from exc
        if isinstance(data, dict) and not hasattr(data, "lists"):
            return data
        if not hasattr(data, "lists"):
            raise bad_request("body must be a JSON object or form fields")
        pairs = [(k, v) for k, values in data.lists() for v in values]
        try:
            return parse_bracketed(pairs)
        except FormDataError as exc:
            raise bad_request(str(exc)) from exc


def text(form: dict[str, Any], *path: str, required: bool = True) -> str:
    """A string field from a nested form, e.g. `text(form, "auth", "member_id")`."""
    node: Any = form
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    name = path[0] + "".join(f"[{p}]" for p in path[1:])
    if node is None or node == "":
        if required:
            raise missing(name)
        return ""
    if not isinstance(node, str | int | float):
        raise bad_request(f"{name} must be a string", field=name)
    return str(node)


def not_found_view(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        {"error": "not_found", "detail": f"no endpoint at {request.path}"}, status=404
    )
