"""Endpoints Bitrix24 calls: install, app page, events; plus health checks.

Views store and answer; they never speak HTTP themselves: REST goes through the outbox, and
install verification through install.py, which asks the auth server via rest.py.
"""

import logging
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.decorators.clickjacking import xframe_options_exempt
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request

from bitrixapp import events, install
from bitrixapp.http import (
    ApiError,
    InboundEndpoint,
    bad_request,
    not_found,
    text,
)
from bitrixapp.models import BitrixEvent, Portal
from bitrixapp.webhooks import check_application_token, portal_for_event

log = logging.getLogger(__name__)

EVENT_NAME_MAX = BitrixEvent._meta.get_field("source").max_length


# An install refused for being malformed (400) or unproven (403), in our error vocabulary.
_REFUSAL_CODES = {400: "invalid_request", 403: "install_not_verified"}


def _refusal(exc: install.InstallRefused) -> ApiError:
    return ApiError(exc.status, _REFUSAL_CODES[exc.status], str(exc), exc.field)


def _grant_or_400(build: Any, *args: Any) -> install.Grant:
    try:
        return build(*args)
    except install.InstallRefused as exc:
        raise _refusal(exc) from exc


def _install(grant: install.Grant) -> Portal:
    try:
        return install.install(grant)
    except install.InstallRefused as exc:
        raise _refusal(exc) from exc


def _install_event(form: dict[str, Any]) -> HttpResponse:
    """ONAPPINSTALL, at either URL: answered in JSON."""
    grant = _grant_or_400(install.grant_from_event, form)
    try:
        portal = _install(grant)
    except install.AuthServerUnavailable as exc:
        return _retry_later(exc)
    status = "installed" if grant.has_tokens else "updated"
    return JsonResponse({"status": status, "member_id": portal.member_id})


def _retry_later(exc: install.AuthServerUnavailable) -> JsonResponse:
    response = JsonResponse({"error": "auth_server_unavailable", "detail": str(exc)}, status=503)
    response["Retry-After"] = str(install.RETRY_AFTER_S)
    return response


@method_decorator(xframe_options_exempt, name="dispatch")
class InstallView(InboundEndpoint):
    """POST /bitrix/install/: the install page in the frame, or the ONAPPINSTALL callback."""

    def post(self, request: Request) -> HttpResponse:
        form = self.form(request)
        if str(form.get("event") or "").upper() == "ONAPPINSTALL":
            return _install_event(form)
        if "AUTH_ID" not in form:
            raise bad_request(
                "expected the install frame POST (AUTH_ID...) or an ONAPPINSTALL event"
            )
        grant = _grant_or_400(install.grant_from_frame, request.query_params, form)
        try:
            portal = _install(grant)
        except install.AuthServerUnavailable as exc:
            return _retry_later(exc)
        return render(request, "bitrixapp/install.html", _page_context(portal))


@method_decorator(xframe_options_exempt, name="dispatch")
class AppPageView(InboundEndpoint):
    """POST /bitrix/app/: the app's main page inside the Bitrix24 frame."""

    parser_classes = [FormParser, MultiPartParser]

    def post(self, request: Request) -> HttpResponse:
        form = self.form(request)
        grant = _grant_or_400(install.grant_from_frame, request.query_params, form)
        portal = Portal.objects.filter(member_id=grant.member_id).first()
        if portal is None or portal.status == Portal.Status.UNINSTALLED:
            raise not_found("this portal has not installed the app; install it from Bitrix24")
        if portal.application_token:
            check_application_token(portal, grant.application_token, "APPLICATION_TOKEN")
        revived, refused = install.revive(portal, grant)
        if install.needs_setup(portal):
            with transaction.atomic():
                install.queue_setup(portal)
        context = _page_context(portal)
        context.update(revived=revived, revive_refused=refused)
        return render(request, "bitrixapp/app.html", context)


def _page_context(portal: Portal) -> dict[str, Any]:
    return {
        "portal": portal,
        "events_url": f"{settings.APP_BASE_URL}/bitrix/events/",
        "sdk_url": settings.BITRIX24_JS_SDK_URL,
    }


class EventsView(InboundEndpoint):
    """POST /bitrix/events/: every event the app is bound to."""

    def post(self, request: Request) -> HttpResponse:
        body = request.body  # read before the form: kept (tokens masked) as the stored event
        form = self.form(request)
        name = self._event_name(form)
        if name == "ONAPPINSTALL":
            return _install_event(form)
        portal = portal_for_event(
            text(form, "auth", "member_id"), text(form, "auth", "application_token")
        )
        with transaction.atomic():
            stored = events.store(portal, name, body, request.content_type, request.headers, form)
            if name == "ONAPPUNINSTALL":
                clean = text(form, "data", "CLEAN", required=False) == "1"
                install.uninstall(portal, clean=clean)
        return JsonResponse({"status": "accepted", "event_id": stored.pk})

    @staticmethod
    def _event_name(form: dict[str, Any]) -> str:
        # Checked after upper(): "ß".upper() is "SS", a name can grow past the column.
        name = text(form, "event").upper()
        if len(name) > EVENT_NAME_MAX:
            raise bad_request(f"event is longer than {EVENT_NAME_MAX} characters", field="event")
        return name


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "broker": _check_broker()}
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503
    )


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    from bitrixapp.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
