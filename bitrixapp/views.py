"""Endpoints Bitrix24 calls: install, app page, events; plus health checks.

Views store and answer; they never call Bitrix24 (all REST goes through the outbox).
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
    InboundEndpoint,
    bad_request,
    forbidden,
    gone,
    not_found,
    secrets_equal,
    text,
)
from bitrixapp.models import BitrixEvent, Portal

log = logging.getLogger(__name__)

EVENT_NAME_MAX = BitrixEvent._meta.get_field("event").max_length


def _grant_or_400(build: Any, *args: Any) -> install.Grant:
    try:
        return build(*args)
    except install.InstallRefused as exc:
        raise bad_request(str(exc), field=exc.field) from exc


@method_decorator(xframe_options_exempt, name="dispatch")
class InstallView(InboundEndpoint):
    """POST /bitrix/install/: the install page in the frame, or the ONAPPINSTALL callback."""

    def post(self, request: Request) -> HttpResponse:
        form = self.form(request)
        if str(form.get("event") or "").upper() == "ONAPPINSTALL":
            portal = install.install(_grant_or_400(install.grant_from_event, form))
            return JsonResponse({"status": "installed", "member_id": portal.member_id})
        if "AUTH_ID" not in form:
            raise bad_request(
                "expected the install frame POST (AUTH_ID...) or an ONAPPINSTALL event"
            )
        portal = install.install(
            _grant_or_400(install.grant_from_frame, request.query_params, form)
        )
        return render(request._request, "bitrixapp/install.html", _page_context(portal))


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
        if portal.application_token and not secrets_equal(
            grant.application_token, portal.application_token
        ):
            raise forbidden("APPLICATION_TOKEN does not match the one stored at install")
        revived = install.revive(portal, grant)
        if install.needs_setup(portal):
            with transaction.atomic():
                install.queue_setup(portal)
        context = _page_context(portal)
        context["revived"] = revived
        return render(request._request, "bitrixapp/app.html", context)


def _page_context(portal: Portal) -> dict[str, Any]:
    return {
        "portal": portal,
        "events_url": f"{settings.APP_BASE_URL}/bitrix/events/",
        "sdk_url": settings.BITRIX24_JS_SDK_URL,
    }


class EventsView(InboundEndpoint):
    """POST /bitrix/events/: every event the app is bound to."""

    def post(self, request: Request) -> HttpResponse:
        form = self.form(request)
        name = self._event_name(form)
        if name == "ONAPPINSTALL":
            portal = install.install(_grant_or_400(install.grant_from_event, form))
            return JsonResponse({"status": "installed", "member_id": portal.member_id})
        portal = self._verified_portal(form)
        with transaction.atomic():
            stored = events.store(portal, name, form)
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

    @staticmethod
    def _verified_portal(form: dict[str, Any]) -> Portal:
        member_id = text(form, "auth", "member_id")
        token = text(form, "auth", "application_token")
        portal = Portal.objects.filter(member_id=member_id).first()
        if portal is None:
            raise not_found(f"no portal with member_id {member_id!r} has installed the app")
        if portal.status == Portal.Status.UNINSTALLED:
            raise gone("this portal has uninstalled the app")
        if not secrets_equal(token, portal.application_token):
            raise forbidden("auth[application_token] does not match the one stored at install")
        return portal


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
