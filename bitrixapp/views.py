"""Endpoints Bitrix24 calls: install, app page, events; plus health checks.

Views store and answer; they never speak HTTP themselves: REST goes through the outbox, and
install verification through install.py, which asks the auth server via rest.py.
"""

import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import login
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone, translation
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request

from bitrixapp import admin_login, app_page, events, install, languages, problems, rest, users
from bitrixapp.http import (
    ApiError,
    InboundEndpoint,
    bad_request,
    not_found,
    text,
)
from bitrixapp.middleware import server_endpoint
from bitrixapp.models import BitrixEvent, BitrixUser, Portal
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


def wants_html(request: HttpRequest) -> bool:
    """A person's browser, not a server: GETs from it get a page, everything else JSON."""
    return "text/html" in request.META.get("HTTP_ACCEPT", "")


class HumanGet:
    """A GET of a URL only Bitrix24 should POST to: a short page for a person who opened it
    in a browser (before DRF, whose content negotiation knows only JSON); the JSON 405 of the
    endpoint's contract for everyone else."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "GET" or not wants_html(request):
            return super().dispatch(request, *args, **kwargs)
        return render(
            request,
            "bitrixapp/outside.html",
            {"version": settings.APP_VERSION, "base_url": settings.APP_BASE_URL},
        )


@method_decorator(xframe_options_exempt, name="dispatch")
class InstallView(HumanGet, InboundEndpoint):
    """POST /bitrix/install/: the install page in the frame, or the ONAPPINSTALL callback."""

    def post(self, request: Request) -> HttpResponse:
        app_page.activate(request.query_params.get("LANG"))
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
class AppPageView(HumanGet, InboundEndpoint):
    """POST /bitrix/app/: the app's main page inside the Bitrix24 frame.

    Trust: the APPLICATION_TOKEN must be the stored one (the request comes from this portal's
    Bitrix24), and who the user is comes from the portal itself (`profile`, `user.admin` asked
    with the posted AUTH_ID at the STORED endpoint). Only portal admins get the webhook URLs
    and the button into the settings."""

    parser_classes = [FormParser, MultiPartParser]

    def post(self, request: Request) -> HttpResponse:
        app_page.activate(request.query_params.get("LANG"))
        form = self.form(request)
        grant = _grant_or_400(install.grant_from_frame, request.query_params, form)
        portal = Portal.objects.filter(member_id=grant.member_id).first()
        if portal is None or portal.status == Portal.Status.UNINSTALLED:
            raise not_found("this portal has not installed the app; install it from Bitrix24")
        if portal.application_token:
            check_application_token(portal, grant.application_token, "APPLICATION_TOKEN")
        # Asked before revive(): that exchanges the posted refresh token for a new pair.
        user = rest.current_user(portal, grant.access_token)
        is_admin = bool(user and user.is_admin)
        problems.remember_language(portal, grant.language)
        if is_admin:
            problems.note_admin(portal, user.user_id)
        revived, refused = install.revive(portal, grant)
        with transaction.atomic():
            if install.needs_setup(portal):
                install.queue_setup(portal)
            if is_admin and _users_stale(portal):
                users.sync(portal)
            login_token = admin_login.issue(portal, user) if is_admin else ""
        context = _page_context(portal)
        context.update(
            revived=revived,
            revive_refused=refused,
            user=user,
            is_admin=is_admin,
            login_token=login_token,
            problems=problems.open_problems(portal) if is_admin else [],
            panels=app_page.panels(portal),
            language=translation.get_language(),
        )
        response = render(request, "bitrixapp/app.html", context)
        response["Content-Security-Policy"] = _frame_ancestors(portal)
        return response


def _page_context(portal: Portal) -> dict[str, Any]:
    return {
        "portal": portal,
        "events_url": f"{settings.APP_BASE_URL}/bitrix/events/",
        "sdk_url": settings.BITRIX24_JS_SDK_URL,
    }


# The user list is read again when an admin opens the app and it is older than this.
USERS_STALE_AFTER_S = 24 * 3600


def _users_stale(portal: Portal) -> bool:
    newest = BitrixUser.objects.filter(portal=portal).order_by("-synced_at").first()
    return newest is None or (timezone.now() - newest.synced_at).total_seconds() > (
        USERS_STALE_AFTER_S
    )


def _frame_ancestors(portal: Portal) -> str:
    """Only the portal's own pages may frame the app page (Bitrix24 REST docs:
    local-integrations/site-does-not-allow-connection)."""
    scheme = urlsplit(portal.client_endpoint).scheme or "https"
    return f"frame-ancestors {scheme}://{portal.domain}"


@server_endpoint
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
        if name == "ONAPPUNINSTALL":
            return _uninstall_event(portal, body, request, form)
        # One INSERT, its own transaction.
        stored = events.store(portal, name, body, request.content_type, request.headers, form)
        return JsonResponse({"status": "accepted", "event_id": stored.pk})

    @staticmethod
    def _event_name(form: dict[str, Any]) -> str:
        # Checked after upper(): "ß".upper() is "SS", a name can grow past the column.
        name = text(form, "event").upper()
        if len(name) > EVENT_NAME_MAX:
            raise bad_request(f"event is longer than {EVENT_NAME_MAX} characters", field="event")
        return name


def _uninstall_event(
    portal: Portal, body: bytes, request: Request, form: dict[str, Any]
) -> JsonResponse:
    """The event is kept if and only if the uninstall is done."""
    with transaction.atomic():
        stored = events.store(
            portal, "ONAPPUNINSTALL", body, request.content_type, request.headers, form
        )
        install.uninstall(portal, clean=text(form, "data", "CLEAN", required=False) == "1")
    return JsonResponse({"status": "accepted", "event_id": stored.pk})


@csrf_exempt  # posted from the app page in the Bitrix24 iframe, which has no CSRF cookie
@require_http_methods(["GET", "POST"])
def admin_login_view(request: HttpRequest) -> HttpResponse:
    """POST /bitrix/admin-login/ from the app page's button (a new tab): spend the one-time
    token, log in as the portal's admin, go to the admin. The token travels in the body, so it
    is never in a URL, a log or the browser history."""
    language = languages.of_bitrix(request.POST.get("lang"))
    translation.activate(language)
    user = admin_login.redeem(request.POST.get("token", "")) if request.method == "POST" else None
    if user is None:
        return render(request, "bitrixapp/login_refused.html", status=403 if request.POST else 200)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    response = HttpResponseRedirect("/admin/")
    response.set_cookie(settings.LANGUAGE_COOKIE_NAME, language, samesite="Lax")
    return response


def home(request: HttpRequest) -> HttpResponse:
    """GET /: what this service is, its version, where to start."""
    return render(
        request,
        "bitrixapp/home.html",
        {
            "version": settings.APP_VERSION,
            "base_url": settings.APP_BASE_URL,
            "title": _("Bitrix24 telephony & SMS bridge"),
        },
    )


@server_endpoint
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@server_endpoint
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
