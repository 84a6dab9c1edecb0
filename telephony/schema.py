"""The OpenAPI description of the PBX webhook (applied at start-up by TelephonyConfig.ready(),
so telephony/views.py stays about handling requests)."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers

from bitrixapp.schema import COMMON_ERRORS, FORM, error, form_schema, status_answer
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
        "event types the app does not use are stored and answered 200 too.",
        parameters=[
            OpenApiParameter(
                "hook", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The connection"
            ),
        ],
        request={FORM: MANGO_FORM, "application/json": {"type": "object"}},
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
