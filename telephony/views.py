"""POST /telephony/hooks/<uuid>/... : the PBX webhook of one connection.

Cheap on purpose: find the connection, check the size and the signature, keep the redacted
raw request once, answer, and queue the processing after commit. The body is parsed here only
to answer a malformed one with 400 naming the field; a signed malformed body is kept as
`rejected` with that reason, so that "process again" can recover it after a parser fix.
Processing parses the stored body again (telephony.pipeline.handle). No Bitrix24 call here.
"""

from django.http import HttpResponse, JsonResponse
from rest_framework.request import Request

from bitrixapp import inbox, storable
from bitrixapp.http import ApiError, InboundEndpoint, bad_request
from bitrixapp.middleware import server_endpoint
from bitrixapp.webhooks import receiver_by_hook
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
        connection = receiver_by_hook(PbxConnection, hook, "PBX connection")
        webhook = Webhook(
            _storable_path(subpath),
            request.body,
            request.content_type,
            method=request.method,
            query=request.META.get("QUERY_STRING", ""),
            headers=request.headers,
        )
        provider = providers.get(connection.provider)
        try:
            provider.verify(connection, webhook)
        except WebhookRejected as exc:
            if exc.status == 403:
                alerts.webhook_refused(connection, exc.detail)
            raise _answer(exc) from exc
        alerts.webhook_accepted(connection)
        try:
            events = provider.parse(webhook)
        except WebhookRejected as exc:
            _keep(connection, provider, webhook, state=State.REJECTED, error=exc.detail)
            raise _answer(exc) from exc
        row = _keep(connection, provider, webhook, events=[e.to_json() for e in events])
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
    connection: PbxConnection, provider: Provider, webhook: Webhook, **fields: object
) -> PbxEvent | None:
    """Store the authenticated request, secrets masked; None for a duplicate delivery."""
    return inbox.store(
        PbxEvent,
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
