"""POST /sms/send/<uuid>/ (Bitrix24 hands a sender one message) and POST /sms/dlr/<uuid>/
(the gateway's delivery reports for an account).

Cheap on purpose, like every inbound endpoint: find the receiver by its secret URL, check
the application token (handler calls), keep the redacted request once, answer, and let a
worker do the rest (sms.pipeline) after commit. No Bitrix24 or gateway call here. A body
that is authenticated but cannot be read is kept as `rejected` with the reason its 400 names.
"""

import hashlib
from typing import Any

from django.http import HttpResponse, JsonResponse
from rest_framework.request import Request

from bitrixapp import inbox, storable
from bitrixapp.http import ApiError, InboundEndpoint, bad_request, text
from bitrixapp.middleware import server_endpoint
from bitrixapp.webhooks import check_application_token, receiver_by_hook
from sms import providers
from sms.models import SmsAccount, SmsDeliveryReport, SmsHandlerCall, SmsSender
from sms.providers.base import ReportRejected

State = inbox.InboundRequest.State
MESSAGE_ID_MAX = SmsHandlerCall._meta.get_field("dedupe_key").max_length


def _kind(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


@server_endpoint
class SmsSendView(InboundEndpoint):
    """Bitrix24's messageservice HANDLER call: form fields or JSON (both are seen)."""

    def post(self, request: Request, hook: str) -> HttpResponse:
        sender = receiver_by_hook(
            SmsSender, hook, "SMS sender", portal_secrets=["application_token"]
        )
        form = self.form(request)
        body, content_type = inbox.storable_body(request.body, request.content_type, form)
        check_application_token(
            sender.portal, text(form, "auth", "application_token"), "auth[application_token]"
        )
        try:
            message_id = _message_id(form)
        except ApiError as exc:
            _keep(sender, body, content_type, request, "", state=State.REJECTED, error=exc.detail)
            raise
        row = _keep(sender, body, content_type, request, message_id)
        if row is None:
            return JsonResponse({"status": "duplicate", "message_id": message_id})
        return JsonResponse({"status": "accepted", "message_id": message_id})


def _message_id(form: dict[str, Any]) -> str:
    message_id = text(form, "message_id").strip()
    if len(message_id) > MESSAGE_ID_MAX:
        raise bad_request(f"message_id is longer than {MESSAGE_ID_MAX} characters", "message_id")
    return message_id


def _keep(
    sender: SmsSender,
    body: bytes,
    content_type: str,
    request: Request,
    message_id: str,
    **fields: Any,
) -> SmsHandlerCall | None:
    return inbox.store(
        SmsHandlerCall,
        portal_id=sender.portal_id,
        sender=sender,
        source="send",
        # A rejected call keeps no key: it must not block the real one later.
        dedupe_key=message_id or f"rejected:{hashlib.sha256(body).hexdigest()[:40]}",
        body=inbox.redact(body, content_type, SmsHandlerCall.SECRET_FIELDS),
        content_type=content_type,
        headers=inbox.diagnostic_headers(request.headers),
        **fields,
    )


@server_endpoint
class SmsReportView(InboundEndpoint):
    """The gateway's delivery reports: a JSON object, a JSON array of them, or form fields."""

    def post(self, request: Request, hook: str) -> HttpResponse:
        account = receiver_by_hook(SmsAccount, hook, "SMS account")
        document = self._document(request)
        body, content_type = inbox.storable_body(request.body, request.content_type, document)
        provider = providers.get(account.provider)
        try:
            reports = provider.parse_reports(document)
        except ReportRejected as exc:
            _keep_report(account, body, content_type, request, State.REJECTED, exc.detail)
            raise bad_request(exc.detail, field=exc.field) from exc
        row = _keep_report(account, body, content_type, request)
        if row is None:
            return JsonResponse({"status": "duplicate"})
        return JsonResponse({"status": "accepted", "reports": len(reports)})

    def _document(self, request: Request) -> Any:
        """A JSON array is read as it is (the gateway batches reports); anything else as the
        usual object or form fields."""
        if _kind(request.content_type).endswith("json") and request.body.lstrip()[:1] == b"[":
            data = request.data
            problem = storable.find_problem(data)
            if problem:
                name = storable.shorten(storable.bracketed(problem.path))
                raise bad_request(f"{name} {problem.reason}", field=name)
            return data
        return self.form(request)


def _keep_report(
    account: SmsAccount,
    body: bytes,
    content_type: str,
    request: Request,
    state: str = State.RECEIVED,
    error: str = "",
) -> SmsDeliveryReport | None:
    """Exact repeats of a report (the gateway retrying) are kept once."""
    return inbox.store(
        SmsDeliveryReport,
        portal_id=account.portal_id,
        account=account,
        source="report",
        dedupe_key=hashlib.sha256(body).hexdigest(),
        body=body.decode("utf-8", errors="replace"),
        content_type=content_type,
        headers=inbox.diagnostic_headers(request.headers),
        state=state,
        error=error,
    )
