"""The OpenAPI description of the endpoints Bitrix24 calls (served at /api/schema/, browsable
at /api/docs/), and the pieces every app's endpoint descriptions share.

The annotations are applied to the view classes here, at start-up (BitrixAppConfig.ready()),
so the view modules stay about handling requests. An app describes its own endpoints the
same way (telephony/schema.py).
"""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers

from bitrixapp.views import AppPageView, EventsView, InstallView

FORM = "application/x-www-form-urlencoded"


class ApiErrorSerializer(serializers.Serializer):
    """Every error answer of the inbound endpoints (bitrixapp/http.py)."""

    error = serializers.CharField(
        help_text="What kind of error: invalid_request, missing_field, malformed_body, "
        "unsupported_media_type, invalid_signature, forbidden, not_found, uninstalled, "
        "payload_too_large, method_not_allowed"
    )
    detail = serializers.CharField(help_text="What is wrong, in words")
    field = serializers.CharField(
        required=False, help_text="The request field that is wrong, when one is (form name)"
    )


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ApiErrorSerializer, description=description)


# The answers every inbound endpoint can give before it looks at the body.
COMMON_ERRORS = {
    413: error("The body is over the size limit (WEBHOOK_MAX_BODY_BYTES)"),
    415: error("A content type the endpoint does not read"),
}


def form_schema(fields: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A form body's schema: field name (Bitrix24's bracketed names as sent) → meaning."""
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": d} for name, d in fields.items()},
        "required": list(required),
    }


def form_or_json(schema: dict[str, Any]) -> dict[str, Any]:
    """Bitrix24 posts forms; the same fields nested as JSON are read alike."""
    return {FORM: schema, "multipart/form-data": schema, "application/json": schema}


def status_answer(name: str, **fields: serializers.Field) -> OpenApiResponse:
    answer = type(
        name,
        (serializers.Serializer,),
        {"status": serializers.CharField(help_text="What was done"), **fields},
    )
    return OpenApiResponse(answer, description="Taken")


HTML_PAGE = OpenApiResponse(OpenApiTypes.STR, description="The HTML page shown in the frame")

# The page POST Bitrix24 makes into the app's frame (install page and main page).
FRAME_FORM = form_schema(
    {
        "AUTH_ID": "OAuth access token of the user who opened the page",
        "AUTH_EXPIRES": "Its lifetime in seconds",
        "REFRESH_ID": "OAuth refresh token",
        "member_id": "The portal's permanent id",
        "SERVER_ENDPOINT": "Bitrix24 OAuth server",
        "APPLICATION_TOKEN": "The app's token on this portal (signs its events)",
        "APPLICATION_SCOPE": "Granted scopes",
        "status": "Application status: F free, D demo, T trial, P paid, L local, S subscription",
        "PLACEMENT": "Where the page is shown (DEFAULT)",
    },
    required=("AUTH_ID", "REFRESH_ID", "member_id"),
)

# The `auth` block of every event Bitrix24 posts (ONAPPINSTALL, ONEXTERNALCALLSTART ...).
EVENT_AUTH = {
    "auth[member_id]": "The portal's permanent id",
    "auth[application_token]": "The app's token on this portal; must match the stored one",
    "auth[domain]": "The portal's domain",
    "auth[client_endpoint]": "The portal's REST address",
    "auth[access_token]": "OAuth access token (ONAPPINSTALL: checked with Bitrix24's server)",
    "auth[refresh_token]": "OAuth refresh token",
    "auth[expires_in]": "Access token lifetime in seconds",
    "auth[user_id]": "The user the event is about",
}

EVENT_FORM = {
    **form_schema(
        {
            "event": "ONAPPINSTALL, ONAPPUNINSTALL, ONEXTERNALCALLSTART, ONEXTERNALCALLBACKSTART",
            "ts": "Event time (unix seconds)",
            **EVENT_AUTH,
        },
        required=("event", "auth[member_id]", "auth[application_token]"),
    ),
    "additionalProperties": {
        "type": "string",
        "description": "The event's data[...] fields, e.g. data[PHONE_NUMBER], data[CALL_ID], "
        "data[USER_ID] (click-to-call), data[CLEAN] (uninstall)",
    },
}

QUERY = (
    "Bitrix24 puts the portal's address in the query string: DOMAIN (e.g. "
    "acme.bitrix24.ru), PROTOCOL (1 https, 0 http), LANG, APP_SID."
)

extend_schema_view(
    post=extend_schema(
        operation_id="bitrix_install",
        tags=["Bitrix24"],
        summary="Install the app on a portal",
        description="Either the install page POST into the frame (form fields below; "
        f"{QUERY} The answer is the install page, which calls BX24.installFinish) or the "
        "server-to-server ONAPPINSTALL event (answered with JSON). Tokens are trusted only "
        "after Bitrix24's OAuth server confirms them.",
        request=form_or_json(
            {"oneOf": [FRAME_FORM, {**EVENT_FORM, "description": "ONAPPINSTALL event"}]}
        ),
        responses={
            (200, "text/html"): HTML_PAGE,
            (200, "application/json"): status_answer(
                "InstallAnswer", member_id=serializers.CharField()
            ),
            400: error("A field is missing or wrong (named in `field`)"),
            **COMMON_ERRORS,
        },
    )
)(InstallView)

extend_schema_view(
    post=extend_schema(
        operation_id="bitrix_app_page",
        tags=["Bitrix24"],
        summary="The app's main page inside Bitrix24",
        description=f"The frame POST of a portal that has installed the app. {QUERY}",
        request={FORM: FRAME_FORM, "multipart/form-data": FRAME_FORM},
        responses={
            (200, "text/html"): HTML_PAGE,
            400: error("A field is missing or wrong (named in `field`)"),
            403: error("APPLICATION_TOKEN does not match the one stored at install"),
            404: error("This portal has not installed the app"),
            **COMMON_ERRORS,
        },
    )
)(AppPageView)

extend_schema_view(
    post=extend_schema(
        operation_id="bitrix_events",
        tags=["Bitrix24"],
        summary="Events the app is bound to",
        description="Each event is stored, answered, and handled by a worker. The event's "
        "auth[application_token] must match the one stored at install.",
        request=form_or_json(EVENT_FORM),
        responses={
            200: status_answer(
                "EventAnswer",
                event_id=serializers.IntegerField(required=False, help_text="The stored event"),
                member_id=serializers.CharField(required=False, help_text="ONAPPINSTALL"),
            ),
            400: error("A field is missing or wrong (named in `field`)"),
            403: error("auth[application_token] does not match"),
            404: error("No portal with this member_id has installed the app"),
            410: error("The portal has uninstalled the app"),
            **COMMON_ERRORS,
        },
    )
)(EventsView)
