"""POST /telephony/hooks/<uuid>/... : the PBX webhook of one connection.

Cheap on purpose: find the connection (remembered by the process, bitrixapp.webhooks), check
the size and the signature, keep the redacted raw request once, answer, and queue the
processing after commit. The body is parsed here only to answer a malformed one with 400
naming the field; a signed malformed body is kept as `rejected` with that reason, so that
"process again" can recover it after a parser fix.
Processing parses the stored body again (telephony.pipeline.handle). No Bitrix24 call here.
"""

from django.http import HttpResponse, JsonResponse
from rest_framework.request import Request

from bitrixapp import inbox, storable
from bitrixapp.http import ApiError, InboundEndpoint, bad_request
from bitrixapp.middleware import server_endpoint
from bitrixapp.prepared import NotInserted
from bitrixapp.webhooks import (
    Found,
    ReceiverChanged,
    forget_receiver,
    receiver_by_hook,
    remembered_receiver,
)
from telephony import alerts, providers
from telephony.models import PbxConnection, PbxEvent
from telephony.providers.base import Provider, Webhook, WebhookRejected

State = PbxEvent.State
SOURCE_MAX = PbxEvent._meta.get_field("source").max_length


@server_endpoint
class PbxWebhookView(InboundEndpoint):
    # The provider reads the raw bytes (signatures are byte-exact): DRF never parses them.
    parser_classes: list = []

    def post(self, request: Request, hook: str, subpath: str = "") -> HttpResponse:
        try:
            connection = remembered_receiver(PbxConnection, hook, WHAT, GUARDED)
            return _accept(connection, request, subpath)
        except ReceiverChanged:
            # The connection changed since this process remembered it (or the signature did
            # not match what it remembered): judge the request on the row as it is now.
            forget_receiver(PbxConnection, hook)
            connection = Found(receiver_by_hook(PbxConnection, hook, WHAT), None)
            return _accept(connection, request, subpath)


WHAT = "PBX connection"
# What the acknowledgement reads of a connection besides `is_active`: a remembered one is
# used only while these are unchanged in the database (bitrixapp.webhooks).
GUARDED = ("webhook_uuid", "portal", "provider", "credentials", "last_error")


def _accept(receiver: Found[PbxConnection], request: Request, subpath: str) -> HttpResponse:
    """Judge and keep one webhook. On a remembered connection only the plain acceptance is
    made: whatever else the request would get (an error answer, closing a recorded refusal)
    is decided again on the connection as it is now (ReceiverChanged), so that a connection
    deactivated, re-keyed or uninstalled meanwhile answers exactly as a fresh look-up would."""
    connection = receiver.row
    provider = providers.get(connection.provider)
    try:
        webhook = Webhook(
            _storable_path(subpath),
            request.body,
            request.content_type,
            method=request.method,
            query=request.META.get("QUERY_STRING", ""),
            headers=request.headers,
        )
        provider.verify(connection, webhook)
    except (ApiError, WebhookRejected) as exc:
        if receiver.guard is not None:
            raise ReceiverChanged from exc
        if isinstance(exc, ApiError):
            raise
        if exc.status == 403:
            alerts.webhook_refused(connection, exc.detail)
        raise _answer(exc) from exc
    if receiver.guard is not None and alerts.refusal_open(connection):
        raise ReceiverChanged  # closing a recorded refusal: on the row as it is now
    alerts.webhook_accepted(connection)
    try:
        events = provider.parse(webhook)
    except WebhookRejected as exc:
        _keep(receiver, provider, webhook, state=State.REJECTED, error=exc.detail)
        raise _answer(exc) from exc
    row = _keep(receiver, provider, webhook, events=[e.to_json() for e in events])
    if row is None:
        return JsonResponse({"status": "duplicate"})
    return JsonResponse({"status": "accepted", "event_id": row.pk})


def _storable_path(subpath: str) -> str:
    """The path below the connection's URL, refused (400, nothing stored) when it cannot be
    kept as the stored request's source."""
    path = subpath.strip("/")
    problem = storable.find_problem(path)
    if problem:
        raise bad_request(f"the URL path {problem.reason}", field="path")
    if len(path) > SOURCE_MAX:
        raise bad_request(f"the URL path is longer than {SOURCE_MAX} characters", field="path")
    return path


def _answer(exc: WebhookRejected) -> ApiError:
    code = "invalid_signature" if exc.status == 403 else "invalid_request"
    return ApiError(exc.status, code, exc.detail, exc.field)


def _keep(
    receiver: Found[PbxConnection], provider: Provider, webhook: Webhook, **fields: object
) -> PbxEvent | None:
    """Store the authenticated request, secrets masked; None for a duplicate delivery."""
    connection = receiver.row
    try:
        return inbox.store(
            PbxEvent,
            only_if=receiver.guard,
            portal_id=connection.portal_id,
            connection=connection,
            source=webhook.path,
            dedupe_key=provider.dedupe_key(webhook),
            body=inbox.redact(webhook.body, webhook.content_type, provider.secret_fields),
            content_type=webhook.content_type[:100],
            query=inbox.redact_query(webhook.query_string, provider.secret_fields),
            headers=inbox.diagnostic_headers(webhook.headers, provider.kept_headers),
            **fields,
        )
    except NotInserted as exc:
        raise ReceiverChanged from exc
