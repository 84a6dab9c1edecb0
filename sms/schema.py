"""The OpenAPI description of the SMS handler and delivery-report endpoints (applied at
start-up by SmsConfig.ready(), so sms/views.py stays about handling requests)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers

from bitrixapp.schema import COMMON_ERRORS, FORM, error, form_schema, status_answer
from sms.views import SmsReportView, SmsSendView

HANDLER_CALL = form_schema(
    {
        "message_id": "Bitrix24's id of the message (kept for status updates)",
        "message_to": "The recipient's phone number as typed in the CRM",
        "message_body": "The text",
        "code": "The sender's CODE",
        "module_id": "crm (a CRM card) or bizproc (a robot or workflow)",
        "bindings": "CRM entities the message is bound to (OWNER_TYPE_ID, OWNER_ID)",
        "auth[application_token]": "The application token Bitrix24 gave at install",
    },
    required=("message_id", "auth[application_token]"),
)
REPORT = form_schema(
    {
        "message_id": "MTS's message id",
        "extra_id": "Our id of the message",
        "status": "1 in progress, 2 delivered, 3 not delivered (-1: none yet)",
        "substatus": "26: not delivered within its lifetime; others see MTS",
        "total_sms_parts": "Parts billed",
    },
    required=("status",),
)
HOOK = OpenApiParameter("hook", OpenApiTypes.UUID, OpenApiParameter.PATH)

extend_schema_view(
    post=extend_schema(
        tags=["SMS"],
        operation_id="sms_handler",
        summary="Bitrix24 hands a sender one message to send",
        description="The sender's handler URL (registered in Bitrix24 by the app) identifies "
        "it. Stored once per message_id (a repeat answers `duplicate`) and sent by a worker; "
        "its status reaches Bitrix24 through messageservice.message.status.update.",
        parameters=[HOOK],
        request={FORM: HANDLER_CALL, "application/json": HANDLER_CALL},
        responses={
            200: status_answer(
                "SmsHandlerAnswer", message_id=serializers.CharField(help_text="As given")
            ),
            400: error("message_id is missing or malformed (the field is named)"),
            403: error("auth[application_token] does not match the one stored at install"),
            404: error("No active sender has this handler URL"),
            410: error("The sender's portal has uninstalled the app"),
            **COMMON_ERRORS,
        },
    )
)(SmsSendView)

extend_schema_view(
    post=extend_schema(
        tags=["SMS"],
        operation_id="sms_delivery_report",
        summary="MTS delivery report(s) for one account",
        description="The account's DLR URL identifies it. One report as a JSON object or "
        "form fields, or several as a JSON array. Exact repeats answer `duplicate`.",
        parameters=[HOOK],
        request={
            FORM: REPORT,
            "application/json": {"oneOf": [REPORT, {"type": "array", "items": REPORT}]},
        },
        responses={
            200: status_answer(
                "SmsReportAnswer",
                reports=serializers.IntegerField(required=False, help_text="Reports read"),
            ),
            400: error("A report cannot be read (the field is named)"),
            404: error("No active SMS account has this URL"),
            410: error("The account's portal has uninstalled the app"),
            **COMMON_ERRORS,
        },
    )
)(SmsReportView)
