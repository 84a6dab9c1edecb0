"""The telephony part of the app page: PBX connections, the setup checklist, recent calls."""

from django.db.models import Count, Max
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bitrixapp.app_page import Account, Activity, Panel, Step, Url
from bitrixapp.models import Portal
from telephony import providers
from telephony.models import Call, PbxConnection, PbxEvent, PbxExtension, PbxLine

RECENT_CALLS = 8


def _provider_name(slug: str) -> str:
    try:
        return providers.get(slug).name
    except (KeyError, ImportError):
        return slug


def _account(connection: PbxConnection, last_event_at) -> Account:
    lines = list(connection.lines.all())
    registered = sum(1 for line in lines if line.registered_at)
    notes = [
        ngettext(
            "%(registered)d of %(count)d line registered in Bitrix24",
            "%(registered)d of %(count)d lines registered in Bitrix24",
            len(lines),
        )
        % {"registered": registered, "count": len(lines)},
        ngettext("%(count)d extension mapped", "%(count)d extensions mapped", connection.ext_count)
        % {"count": connection.ext_count},
    ]
    return Account(
        name=connection.name,
        kind=_("%(provider)s PBX") % {"provider": _provider_name(connection.provider)},
        active=connection.is_active,
        urls=[Url(_("Webhook URL for the PBX"), connection.webhook_url)],
        last_event_at=last_event_at,
        last_error=connection.last_error,
        last_error_at=connection.last_error_at,
        notes=notes,
    )


def _steps(portal: Portal, connections: list[PbxConnection]) -> list[Step]:
    lines = PbxLine.objects.filter(connection__portal=portal)
    unregistered = lines.filter(registered_at__isnull=True).count()
    has_lines = lines.exists()
    return [
        Step(
            _("Add a PBX connection"),
            bool(connections),
            _(
                "Open the settings, then Telephony → PBX connections → Add: choose the "
                "provider and enter the API keys from the PBX's cabinet."
            ),
        ),
        Step(
            _("Paste the webhook URL into the PBX"),
            PbxEvent.objects.filter(portal=portal).exists(),
            _(
                "Copy the connection's webhook URL below into the PBX as the address of the "
                "external system (Mango Office: Integrations → API connector), then make a "
                "test call. This step ticks when the first event arrives."
            ),
        ),
        Step(
            _("Map lines and register them in Bitrix24"),
            has_lines and not unregistered,
            _("On the connection's page add the PBX numbers under Lines and save.")
            if not has_lines
            else ngettext(
                "%(count)d line is not registered in Bitrix24 yet: open the connection and "
                "check its last error.",
                "%(count)d lines are not registered in Bitrix24 yet: open the connection and "
                "check its last error.",
                unregistered,
            )
            % {"count": unregistered},
        ),
        Step(
            _("Map extensions to Bitrix24 users"),
            PbxExtension.objects.filter(connection__portal=portal).exists(),
            _(
                "On the connection's page pick a user for each extension, or select the "
                "connection in the list and run “Fill extensions from Bitrix24 users”."
            ),
        ),
        Step(
            _("First call logged in Bitrix24"),
            Call.objects.filter(portal=portal).exclude(b24_call_id="").exists(),
            _("Make a call through the PBX: it appears in Bitrix24's call statistics."),
        ),
    ]


def _activity(call: Call) -> Activity:
    direction = {"inbound": _("incoming"), "outbound": _("outgoing")}.get(
        call.direction, call.direction or _("call")
    )
    if call.last_error:
        state, ok = _("error"), False
    elif call.status_code == "200":
        state, ok = _("answered"), True
    elif call.status_code == "304":
        state, ok = _("missed"), False
    elif call.status_code:
        state, ok = _("not placed"), False
    else:
        state, ok = _("in progress"), True
    text = _("%(direction)s %(number)s on %(line)s") % {
        "direction": direction,
        "number": call.client_number or "—",
        "line": call.line_number or call.connection.name,
    }
    return Activity(call.started_at or call.created_at, text, state, ok)


def panel(portal: Portal) -> Panel:
    connections = list(
        portal.pbx_connections.order_by("name").annotate(
            last_event_at=Max("events__received_at"), ext_count=Count("extensions", distinct=True)
        )
    )
    calls = Call.objects.filter(portal=portal).select_related("connection")
    return Panel(
        title=_("Telephony"),
        accounts=[_account(c, c.last_event_at) for c in connections],
        steps=_steps(portal, connections),
        recent_title=_("Recent calls"),
        recent=[_activity(c) for c in calls.order_by("-created_at")[:RECENT_CALLS]],
    )
