"""The OpenAPI description of the PBX webhook (applied at start-up by TelephonyConfig.ready(),
so telephony/views.py stays about handling requests)."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from bitrixapp.schema import COMMON_ERRORS, FORM, error, form_schema, status_answer
from telephony.providers.generic import (
    EVENTS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    GenericEventSerializer,
)
from telephony.views import PbxWebhookView

# Mango Office posts every notification as this signed form (docs/adding-a-provider.md).
MANGO_FORM = form_schema(
    {
        "vpbx_api_key": "The connection's API key",
        "sign": "sha256_hex(api_key + json + api_salt)",
        "json": "The event, a JSON object as text (call, summary, recording ...)",
    },
    required=("vpbx_api_key", "sign", "json"),
)


def _generic_event(event: str) -> type[serializers.Serializer]:
    """The generic format's body for one `event` value (docs/generic-webhook.md)."""
    fields: dict = {"event": serializers.ChoiceField(choices=[event], help_text="What happened")}
    if event == "recording":
        fields["recording_url"] = serializers.URLField(
            max_length=255, help_text="An http(s) URL of the recording (.mp3 or .wav)"
        )
    name = f"Generic{event.capitalize()}Event"
    return type(name, (GenericEventSerializer,), {**fields, "__doc__": f"A `{event}` event."})


# The generic JSON provider's events: one object per request (an array of them is accepted
# too, applied in order), signed with the two headers below.
GENERIC_EVENT = PolymorphicProxySerializer(
    component_name="GenericPbxEvent",
    serializers={event: _generic_event(event) for event in EVENTS},
    resource_type_field_name="event",
)

GENERIC_HEADERS = [
    OpenApiParameter(
        TIMESTAMP_HEADER,
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        required=False,
        description="Generic provider: the time of sending in Unix seconds; more than 5 "
        "minutes from the server's clock is refused (403)",
    ),
    OpenApiParameter(
        SIGNATURE_HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=False,
        description="Generic provider: sha256=<lowercase hex HMAC-SHA256, keyed with the "
        "connection's secret, of '<X-Timestamp>.<raw body>'>. MTT: the hex HMAC-SHA256 of the "
        "raw body when the connection has a secret",
    ),
]


class _WebhookSchema(AutoSchema):
    """One view serves the base URL and the paths below it: two operations, two ids."""

    def get_operation_id(self) -> str:
        return "pbx_webhook_below" if "{subpath}" in self.path else "pbx_webhook"


PbxWebhookView.schema = _WebhookSchema()

extend_schema_view(
    post=extend_schema(
        tags=["PBX"],
        summary="A PBX notification for one connection",
        description="The connection's webhook URL (shown in the admin and in export_config) "
        "identifies it; the PBX may append a path below it (Mango: events/call, "
        "events/summary, events/recording ...). The body is checked against the connection's "
        "provider: its signature (403 if wrong) and its format (400 naming the field). A "
        "notification is stored once (a repeat answers `duplicate`) and processed by a worker; "
        "event types the app does not use are stored and answered 200 too. The JSON body "
        "described here is the generic provider's format (docs/generic-webhook.md): one event, "
        "or an array of up to 100 events. MTT posts its own JSON notifications.",
        parameters=[
            OpenApiParameter(
                "hook", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The connection"
            ),
            *GENERIC_HEADERS,
        ],
        request={FORM: MANGO_FORM, "application/json": GENERIC_EVENT},
        responses={
            200: status_answer(
                "PbxWebhookAnswer",
                event_id=serializers.IntegerField(
                    required=False, help_text="The stored notification (accepted)"
                ),
            ),
            400: error("The body is malformed (the field is named)"),
            403: error("The signature does not match the connection's credentials"),
            404: error("No active PBX connection has this webhook URL"),
            410: error("The connection's portal has uninstalled the app"),
            **COMMON_ERRORS,
        },
    )
)(PbxWebhookView)
