"""Failures people must hear about, inside Bitrix24: who is told, how, and when it is over.

`KINDS` is the one table: failure kind → audience (the user who acted, the portal's admins)
and the messages. Everything goes out as Bitrix24 notifications (`im.notify.system.add`)
through the outbox. A notification with the TAG of an earlier one replaces it (Bitrix24 REST
docs: im-notify-system-add), so each problem keeps one live notice, and its recovery notice
replaces it.

- `report(portal, kind, subject, notify_user=..., **params)`: it happened (again). The
  problem row counts every occurrence; the user concerned is told each time; admins at most
  once a day per problem, with the count.
- `resolve(portal, kind, subject)`: it stopped. The problem is closed and the admins told once
  (only if they were told about it, or could not be: a parked portal, a portal whose app
  lacks the im scope).

Transient errors that retry and recover are not problems: nothing calls `report` for them.
Messages are gettext strings rendered in the portal's language (ru or en).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from bitrixapp import languages, outbox
from bitrixapp.models import B24Command, Portal, Problem

USER, ADMINS = "user", "admins"
NOTIFY_METHOD = "im.notify.system.add"
NOTIFIED = "bitrixapp.notified"
# What Bitrix24 answers (403) when the app's token lacks the method's scope: here, a portal
# that installed the app before it asked for `im` (Bitrix24 REST docs, system errors).
NO_SCOPE_ERRORS = frozenset({"insufficient_scope"})
TAG_PREFIX = "telephony-bridge"
# Admins hear about one problem at most this often; the message carries the count.
ADMIN_REMINDER_EVERY = timedelta(days=1)


@dataclass(frozen=True)
class Kind:
    audience: tuple[str, ...]
    admin_message: Any  # lazy gettext; %(count)s, %(since)s and the report's params
    user_message: Any = ""  # to the user concerned; also the CRM call's failure reason
    recovered: Any = ""  # to the admins, once, when the problem stops
    # False: nothing can reach Bitrix24 while the problem lasts (the portal is parked), so
    # the admins hear about it when it is over, from the recovery notice.
    announce_on_report: bool = True


# Admin messages are counted: ngettext_lazy(singular, plural, "count") picks the form from the
# %(count)s parameter (Russian has three: 1 попытка, 2 попытки, 5 попыток). It is written out
# in every entry, not wrapped in a helper: makemessages only finds strings passed straight to
# the gettext functions, and a string it cannot find drops out of the catalogue.
KINDS: dict[str, Kind] = {
    "click_no_connection": Kind(
        (USER, ADMINS),
        user_message=_(
            "The call to %(phone)s was not placed: telephony is not connected on this "
            "Bitrix24 — ask your administrator."
        ),
        admin_message=ngettext_lazy(
            "Calls from the CRM cannot be placed: no PBX connection is set up in the "
            "telephony app (%(count)s attempt since %(since)s). Add a PBX connection.",
            "Calls from the CRM cannot be placed: no PBX connection is set up in the "
            "telephony app (%(count)s attempts since %(since)s). Add a PBX connection.",
            "count",
        ),
        recovered=_("Calls from the CRM can be placed again: a PBX connection is set up."),
    ),
    "click_no_extension": Kind(
        (USER, ADMINS),
        user_message=_("Your extension is not set for line %(line)s — ask your administrator."),
        admin_message=ngettext_lazy(
            "User #%(user_id)s cannot call from the CRM: no extension is set for them on "
            "line %(line)s (%(count)s attempt since %(since)s). Set their extension in the "
            "PBX connection %(connection)s.",
            "User #%(user_id)s cannot call from the CRM: no extension is set for them on "
            "line %(line)s (%(count)s attempts since %(since)s). Set their extension in the "
            "PBX connection %(connection)s.",
            "count",
        ),
        recovered=_("User #%(user_id)s can call from the CRM on line %(line)s again."),
    ),
    "click_refused": Kind(
        (USER, ADMINS),
        user_message=_(
            "The PBX refused the call to %(phone)s: %(error)s. Try again; if it repeats, "
            "tell your administrator."
        ),
        admin_message=ngettext_lazy(
            "The PBX of connection %(connection)s refuses calls from the CRM: %(error)s "
            "(%(count)s time since %(since)s). Check the connection's credentials.",
            "The PBX of connection %(connection)s refuses calls from the CRM: %(error)s "
            "(%(count)s times since %(since)s). Check the connection's credentials.",
            "count",
        ),
        recovered=_("The PBX of connection %(connection)s places calls from the CRM again."),
    ),
    "callback_no_connection": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "A client asked for a callback to %(phone)s, but no PBX connection is set up in "
            "the telephony app, so nobody was rung: call the client back yourself and add a PBX "
            "connection (%(count)s request since %(since)s).",
            "A client asked for a callback to %(phone)s, but no PBX connection is set up in "
            "the telephony app, so nobody was rung: call the client back yourself and add a PBX "
            "connection (%(count)s requests since %(since)s).",
            "count",
        ),
        recovered=_("Callback requests can ring again: a PBX connection is set up."),
    ),
    "callback_impossible": Kind(
        (USER, ADMINS),
        user_message=_(
            "A client asked for a callback to %(phone)s, but nobody could be rung for it: "
            "call the client back yourself."
        ),
        admin_message=ngettext_lazy(
            "Callback requests on connection %(connection)s cannot ring anyone: neither the "
            "client's CRM owner nor the default user has an extension, and no callback "
            "extension is set (%(count)s request since %(since)s).",
            "Callback requests on connection %(connection)s cannot ring anyone: neither the "
            "client's CRM owner nor the default user has an extension, and no callback "
            "extension is set (%(count)s requests since %(since)s).",
            "count",
        ),
        recovered=_("Callback requests on connection %(connection)s ring again."),
    ),
    "callback_refused": Kind(
        (USER, ADMINS),
        user_message=_(
            "A client asked for a callback to %(phone)s, but the PBX refused the call "
            "(%(error)s): call the client back yourself."
        ),
        admin_message=ngettext_lazy(
            "The PBX of connection %(connection)s refuses callback requests: %(error)s "
            "(%(count)s time since %(since)s). Check the connection's credentials.",
            "The PBX of connection %(connection)s refuses callback requests: %(error)s "
            "(%(count)s times since %(since)s). Check the connection's credentials.",
            "count",
        ),
        recovered=_("The PBX of connection %(connection)s places callback requests again."),
    ),
    "webhook_bad_signature": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "The PBX of connection %(connection)s sends webhooks with a wrong key or "
            "signature, and they are refused: its calls are not logged (%(count)s webhook "
            "refused since %(since)s). Check the connection's credentials against the PBX "
            "settings.",
            "The PBX of connection %(connection)s sends webhooks with a wrong key or "
            "signature, and they are refused: its calls are not logged (%(count)s webhooks "
            "refused since %(since)s). Check the connection's credentials against the PBX "
            "settings.",
            "count",
        ),
        recovered=_("Webhooks of connection %(connection)s are accepted again."),
    ),
    "line_refused": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "Bitrix24 refused to register line %(line)s: %(error)s (%(count)s time since "
            "%(since)s). Check the line in the PBX connection.",
            "Bitrix24 refused to register line %(line)s: %(error)s (%(count)s times since "
            "%(since)s). Check the line in the PBX connection.",
            "count",
        ),
        recovered=_("Line %(line)s is registered in Bitrix24 now."),
    ),
    "unmapped_extension": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "Calls of extension %(extension)s on connection %(connection)s go to the default "
            "user: the extension is not mapped to a Bitrix24 user (seen %(count)s time "
            "since %(since)s). Map it in the PBX connection.",
            "Calls of extension %(extension)s on connection %(connection)s go to the default "
            "user: the extension is not mapped to a Bitrix24 user (seen %(count)s times "
            "since %(since)s). Map it in the PBX connection.",
            "count",
        ),
        recovered=_("Extension %(extension)s on connection %(connection)s is mapped now."),
    ),
    "recording_failed": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "Call recordings of connection %(connection)s cannot be downloaded from the PBX: "
            "%(error)s (%(count)s recording since %(since)s).",
            "Call recordings of connection %(connection)s cannot be downloaded from the PBX: "
            "%(error)s (%(count)s recordings since %(since)s).",
            "count",
        ),
        recovered=_("Call recordings of connection %(connection)s download again."),
    ),
    "portal_reauth": Kind(
        (ADMINS,),
        admin_message=_(
            "The app lost access to Bitrix24 (%(reason)s): a portal administrator must open "
            "the app to restore it."
        ),
        recovered=_(
            "The app has access to Bitrix24 again. It was lost on %(since)s (%(reason)s); "
            "calls and messages queued meanwhile are being sent now."
        ),
        announce_on_report=False,
    ),
    "notify_no_scope": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "Notifications cannot reach people in Bitrix24: the app was installed without "
            "the im (notifications) scope, so Bitrix24 refuses them (%(count)s notification "
            "not delivered since %(since)s). A portal administrator must update or reinstall "
            "the app in Bitrix24 so that it gets the im scope; until then, problems are "
            "shown only here.",
            "Notifications cannot reach people in Bitrix24: the app was installed without "
            "the im (notifications) scope, so Bitrix24 refuses them (%(count)s notifications "
            "not delivered since %(since)s). A portal administrator must update or reinstall "
            "the app in Bitrix24 so that it gets the im scope; until then, problems are "
            "shown only here.",
            "count",
        ),
        recovered=_("Notifications of the telephony app reach you in Bitrix24 again."),
        # Nobody can be notified while it lasts: the app page shows it, and the admins hear
        # when notifications go through again.
        announce_on_report=False,
    ),
    "sms_sender_refused": Kind(
        (ADMINS,),
        admin_message=ngettext_lazy(
            "The SMS gateway refuses sender %(sender)s: %(error)s (%(count)s message since "
            "%(since)s). Check the sender name with the gateway.",
            "The SMS gateway refuses sender %(sender)s: %(error)s (%(count)s messages since "
            "%(since)s). Check the sender name with the gateway.",
            "count",
        ),
        recovered=_("The SMS gateway accepts sender %(sender)s again."),
    ),
}


class _Params(dict):
    """Message params: a value a caller did not give shows as "?" instead of failing."""

    def __missing__(self, key: str) -> str:
        return "?"


# ---------------------------------------------------------------- language and audience


def language_of(portal: Portal) -> str:
    return languages.of_bitrix(portal.language)


def admins_of(portal: Portal) -> list[int]:
    """Who hears about configuration problems: the installer and the users seen to be
    admins (Bitrix24 has no REST filter for portal admins, so we remember them)."""
    ids = [portal.installer_user_id, *(portal.admin_user_ids or [])]
    return list(dict.fromkeys(int(i) for i in ids if i))


def note_admin(portal: Portal, user_id: int | None) -> None:
    """Remember a user Bitrix24 confirmed to be a portal admin (user.admin)."""
    if not user_id or user_id == portal.installer_user_id:
        return
    with transaction.atomic():
        locked = Portal.objects.select_for_update().get(pk=portal.pk)
        if user_id not in locked.admin_user_ids:
            locked.admin_user_ids = [*locked.admin_user_ids, user_id]
            locked.save(update_fields=["admin_user_ids", "updated_at"])
    portal.admin_user_ids = locked.admin_user_ids


def remember_language(portal: Portal, language: str) -> None:
    """Keep the portal's language (install LANGUAGE_ID / app page LANG) if none is stored."""
    if language and not portal.language:
        portal.language = language[:8]
        Portal.objects.filter(pk=portal.pk, language="").update(language=portal.language)


# ---------------------------------------------------------------- messages


def message(portal: Portal, text: Any, **params: Any) -> str:
    """A message of the table rendered in the portal's language."""
    with translation.override(language_of(portal)):
        # `%` on the lazy text itself: a counted message picks its form from params["count"].
        return str(text % _Params(params))


def user_message(portal: Portal, kind: str, **params: Any) -> str:
    """What the user concerned is told (and the CRM call's failure reason)."""
    return message(portal, KINDS[kind].user_message, **params)


def _problem_params(problem: Problem) -> dict[str, Any]:
    return {
        **problem.params,
        "count": problem.count,
        "since": f"{problem.first_seen_at:%Y-%m-%d %H:%M} UTC",
    }


def describe(problem: Problem) -> str:
    """The admin's message for a problem, as it stands now."""
    return message(problem.portal, KINDS[problem.kind].admin_message, **_problem_params(problem))


# ---------------------------------------------------------------- report and resolve


def report(
    portal: Portal,
    kind: str,
    subject: str | int,
    *,
    notify_user: int | None = None,
    fix_url: str = "",
    **params: Any,
) -> Problem:
    """It happened (again): count it, tell the user concerned (`notify_user`), and the admins
    if due. `params` are what the messages mention (kept on the problem, JSON values)."""
    spec = KINDS[kind]
    now = timezone.now()
    with transaction.atomic():
        problem = _open_problem(portal, kind, str(subject)[:200], now, params, fix_url)
        if USER in spec.audience and notify_user:
            text = message(portal, spec.user_message, **_problem_params(problem))
            tag = _tag(problem, f"user{notify_user}")
            _notify(portal, [int(notify_user)], text, tag, problem)
        if _admins_due(spec, problem, now):
            told = _notify(portal, admins_of(portal), describe(problem), _tag(problem), problem)
            problem.notified_at = now if told else problem.notified_at
        problem.save()
    return problem


def resolve(portal: Portal, kind: str, subject: str | int) -> bool:
    """It stopped: close the open problem and tell the admins once. False if none was open."""
    spec = KINDS[kind]
    with transaction.atomic():
        problem = _locked_open(portal, kind, str(subject)[:200])
        if problem is None:
            return False
        problem.is_open, problem.closed_at = False, timezone.now()
        problem.save(update_fields=["is_open", "closed_at"])
        told = problem.notified_at is not None or not spec.announce_on_report
        if ADMINS in spec.audience and told:
            text = message(portal, spec.recovered, **_problem_params(problem))
            _notify(portal, admins_of(portal), text, _tag(problem), problem)
    return True


def open_problems(portal: Portal) -> list[Problem]:
    """The portal's open problems, newest first, each with its message as `text`."""
    problems = list(
        Problem.objects.filter(portal=portal, is_open=True)
        .select_related("portal")
        .order_by("-last_seen_at")
    )
    for problem in problems:
        problem.text = describe(problem)
    return problems


def _locked_open(portal: Portal, kind: str, subject: str) -> Problem | None:
    return (
        Problem.objects.select_for_update()
        .filter(portal=portal, kind=kind, subject=subject, is_open=True)
        .first()
    )


def _open_problem(
    portal: Portal, kind: str, subject: str, now: Any, params: dict, fix_url: str
) -> Problem:
    problem = _locked_open(portal, kind, subject)
    if problem is not None:
        problem.count += 1
        problem.last_seen_at = now
        problem.params = {**problem.params, **params}
        problem.fix_url = fix_url or problem.fix_url
        return problem
    try:
        with transaction.atomic():
            return Problem.objects.create(
                portal=portal,
                kind=kind,
                subject=subject,
                params=params,
                fix_url=fix_url,
                first_seen_at=now,
                last_seen_at=now,
            )
    except IntegrityError:  # opened by a parallel report a moment ago: count on that one
        return _open_problem(portal, kind, subject, now, params, fix_url)


def _admins_due(spec: Kind, problem: Problem, now: Any) -> bool:
    if ADMINS not in spec.audience or not spec.announce_on_report:
        return False
    return problem.notified_at is None or now - problem.notified_at >= ADMIN_REMINDER_EVERY


def _tag(problem: Problem, suffix: str = "") -> str:
    return "|".join(p for p in (TAG_PREFIX, problem.kind, problem.subject, suffix) if p)


def _notify(portal: Portal, user_ids: Iterable[int], text: str, tag: str, problem: Problem) -> bool:
    """One notification per recipient, in the tag's own ordered lane (a recovery notice never
    overtakes the problem's). False when there is nobody to tell."""
    sent = False
    for user_id in user_ids:
        outbox.enqueue(
            portal,
            NOTIFY_METHOD,
            {"USER_ID": user_id, "MESSAGE": text, "TAG": tag},
            owner_key=f"notify:{tag}"[:100],
            handler=NOTIFIED,
            context={"problem": problem.pk},
        )
        sent = True
    return sent


@outbox.result_handler(NOTIFIED)
def _notified(command: B24Command) -> None:
    """A notification went through: notifications work (again). Refused for lack of the im
    scope: the admins were not told after all (they will be at the problem's next
    occurrence), and the app page shows that the app needs the scope."""
    portal = Portal.objects.get(pk=command.portal_id)
    if command.state == B24Command.State.DONE:
        resolve(portal, "notify_no_scope", "portal")
    elif command.error_code in NO_SCOPE_ERRORS:
        Problem.objects.filter(pk=command.context.get("problem")).update(notified_at=None)
        report(portal, "notify_no_scope", "portal")
