"""POST /telephony/hooks/<uuid>/... : the PBX webhook of one connection.

Cheap on purpose: find the connection, check the size and the signature, parse (to answer
a malformed body with 400 naming the field), store the raw row once, answer, and queue the
processing after commit. No Bitrix24 call here.
"""

from urllib.parse import parse_qsl, quote_plus

from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

from bitrixapp.http import ApiError, InboundEndpoint, gone, not_found
from bitrixapp.models import Portal
from telephony import providers
from telephony.models import PbxConnection, PbxEvent
from telephony.providers.base import Webhook, WebhookRejected

FORM = "application/x-www-form-urlencoded"


class _RawBody(BaseParser):
    """Accept any content type: the provider reads the raw bytes (signatures are byte-exact)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class PbxWebhookView(InboundEndpoint):
    parser_classes = [_RawBody]

    def post(self, request: Request, hook: str, subpath: str = "") -> HttpResponse:
        connection = self._connection(hook)
        webhook = self._webhook(request, subpath)
        provider = providers.get(connection.provider)
        try:
            provider.verify(connection, webhook)
            events = provider.parse(webhook)
        except WebhookRejected as exc:
            if exc.status == 403:
                connection.record_error(f"webhook refused: {exc.detail}")
            raise ApiError(
                exc.status,
                "invalid_signature" if exc.status == 403 else "invalid_request",
                exc.detail,
                exc.field,
            ) from exc
        return self._store(connection, webhook, provider.dedupe_key(webhook), events)

    @staticmethod
    def _connection(hook: str) -> PbxConnection:
        connection = (
            PbxConnection.objects.select_related("portal").filter(webhook_uuid=hook).first()
        )
        if connection is None or not connection.is_active:
            raise not_found("no active PBX connection has this webhook URL")
        if connection.portal.status == Portal.Status.UNINSTALLED:
            raise gone("the portal of this connection has uninstalled the app")
        return connection

    @staticmethod
    def _webhook(request: Request, subpath: str) -> Webhook:
        body = request._request.body
        content_type = request.content_type.split(";")[0].strip().lower()
        form: dict[str, str] = {}
        if content_type == FORM:
            try:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError as exc:
                raise ApiError(400, "invalid_request", "body is not UTF-8") from exc
        return Webhook(path=subpath.strip("/"), body=body, content_type=content_type, form=form)

    @staticmethod
    def _store(connection: PbxConnection, webhook: Webhook, key: str, events: list) -> JsonResponse:
        from telephony import tasks

        try:
            with transaction.atomic():
                row = PbxEvent.objects.create(
                    connection=connection,
                    path=webhook.path[:100],
                    dedupe_key=key,
                    body=_redacted(webhook.body.decode("utf-8", errors="replace"), connection),
                    events=[e.to_json() for e in events],
                )
                transaction.on_commit(lambda: tasks.process_pbx_event.delay(row.pk), robust=True)
        except IntegrityError:
            return JsonResponse({"status": "duplicate"})
        return JsonResponse({"status": "accepted", "event_id": row.pk})


def _redacted(body: str, connection: PbxConnection) -> str:
    """The body as kept for diagnosis, without the connection's secrets (Mango sends its
    vpbx_api_key in every notification; secrets are never stored in plain text)."""
    for value in connection.credentials.values():
        if value and len(str(value)) >= 4:
            body = body.replace(quote_plus(str(value)), "***").replace(str(value), "***")
    return body
