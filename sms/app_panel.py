"""The SMS part of the app page: gateway accounts and senders, a setup checklist, recent
messages."""

from django.db.models import Max
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bitrixapp.app_page import Account, Activity, Panel, Step, Url
from bitrixapp.models import Portal
from sms.models import SmsAccount, SmsMessage, SmsSender, SmsStatus

RECENT_MESSAGES = 8
# Statuses a portal admin reads as trouble.
FAILED = {SmsStatus.FAILED, SmsStatus.UNDELIVERED}


def _account(account: SmsAccount) -> Account:
    senders = list(account.senders.all())
    registered = sum(1 for sender in senders if sender.registered_at)
    return Account(
        name=account.name,
        kind=_("SMS gateway (MTS Communicator)"),
        active=account.is_active,
        urls=[Url(_("Delivery report URL for the gateway's cabinet"), account.dlr_url)],
        last_event_at=account.last_report_at,
        last_error=account.last_error,
        last_error_at=account.last_error_at,
        notes=[
            ngettext(
                "%(registered)d of %(count)d sender registered in Bitrix24",
                "%(registered)d of %(count)d senders registered in Bitrix24",
                len(senders),
            )
            % {"registered": registered, "count": len(senders)}
        ],
    )


def _steps(portal: Portal, accounts: list[SmsAccount]) -> list[Step]:
    senders = SmsSender.objects.filter(portal=portal)
    unregistered = senders.filter(registered_at__isnull=True).count()
    return [
        Step(
            _("Add an SMS gateway account"),
            bool(accounts),
            _(
                "Open the settings, then SMS → SMS accounts → Add: enter the client id, login "
                "and password MTS gave you."
            ),
        ),
        Step(
            _("Add senders and register them in Bitrix24"),
            senders.exists() and not unregistered,
            _("Add a sender with the alpha name MTS approved; saving registers it in Bitrix24.")
            if not senders.exists()
            else ngettext(
                "%(count)d sender is not registered in Bitrix24 yet: open it and check its "
                "registration error.",
                "%(count)d senders are not registered in Bitrix24 yet: open them and check "
                "their registration errors.",
                unregistered,
            )
            % {"count": unregistered},
        ),
        Step(
            _("First message sent"),
            SmsMessage.objects.filter(portal=portal, sent_at__isnull=False).exists(),
            _("Send an SMS from a CRM card and choose the app's sender."),
        ),
    ]


def _activity(message: SmsMessage) -> Activity:
    text = _("SMS to %(number)s via %(sender)s") % {
        "number": message.recipient_e164 or message.recipient or "—",
        "sender": message.sender.name,
    }
    return Activity(
        message.created_at, text, message.get_status_display(), message.status not in FAILED
    )


def panel(portal: Portal) -> Panel | None:
    """None for a portal without SMS accounts: its page stays about telephony."""
    accounts = list(
        SmsAccount.objects.filter(portal=portal)
        .order_by("name")
        .annotate(last_report_at=Max("reports__received_at"))
    )
    if not accounts:
        return None
    messages = SmsMessage.objects.filter(portal=portal).select_related("sender")
    return Panel(
        title=_("SMS"),
        accounts=[_account(account) for account in accounts],
        steps=_steps(portal, accounts),
        recent_title=_("Recent messages"),
        recent=[_activity(m) for m in messages.order_by("-created_at")[:RECENT_MESSAGES]],
    )
