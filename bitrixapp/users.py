"""The portal's Bitrix24 users, kept as a list admins pick from by name.

`sync(portal)` reads `user.get` page by page (50 a page, Bitrix24 REST docs: user.get) through
the outbox; each page's result handler upserts `BitrixUser` rows and queues the next page.
After the last page, users that were not seen in this sync are marked inactive (fired, or
deactivated in Bitrix24), so old mappings still show a name.
"""

from datetime import datetime
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext as _

from bitrixapp import outbox
from bitrixapp.models import B24Command, BitrixUser, Portal

PAGE_SIZE = 50


def sync(portal: Portal, start: int = 0, started: str = "") -> B24Command:
    """Queue the reading of one page of the portal's active users (the first by default)."""
    return outbox.enqueue(
        portal,
        "user.get",
        {"FILTER": {"ACTIVE": True}, "start": start},
        owner_key=f"users:{portal.pk}",
        handler="bitrixapp.users_synced",
        context={"started": started or timezone.now().isoformat()},
    )


def display_name(user: dict[str, Any]) -> str:
    name = " ".join(str(user.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    return name or str(user.get("EMAIL") or "")


def _store(portal_id: int, user: dict[str, Any], now: datetime) -> None:
    BitrixUser.objects.update_or_create(
        portal_id=portal_id,
        user_id=int(user["ID"]),
        defaults={
            "name": display_name(user)[:200],
            "email": str(user.get("EMAIL") or "")[:200],
            "extension": str(user.get("UF_PHONE_INNER") or "").strip()[:32],
            "is_active": True,
            "synced_at": now,
        },
    )


@outbox.result_handler("bitrixapp.users_synced")
def _users_synced(command: B24Command) -> None:
    if command.state != B24Command.State.DONE or not isinstance(command.result, list):
        return
    now = timezone.now()
    for user in command.result:
        if isinstance(user, dict) and str(user.get("ID") or "").isdigit():
            _store(command.portal_id, user, now)
    started = str(command.context.get("started") or "")
    if len(command.result) == PAGE_SIZE:  # a full page: there may be more
        start = int(command.params.get("start") or 0) + PAGE_SIZE
        sync(command.portal, start=start, started=started)
    elif started:
        BitrixUser.objects.filter(
            portal_id=command.portal_id, synced_at__lt=datetime.fromisoformat(started)
        ).update(is_active=False)


def user_field(portal_id: int | None, keep: set[int], field: forms.Field) -> forms.Field:
    """A select of the portal's Bitrix24 users by name replacing the numeric `field`; ids in
    `keep` (already stored) stay selectable. Without a synced list the number input stays."""
    rows = list(BitrixUser.objects.filter(portal_id=portal_id)) if portal_id else []
    if not rows:
        return field
    options = [(u.user_id, str(u) if u.is_active else f"{u} ({_('inactive')})") for u in rows]
    known = {u.user_id for u in rows}
    options += [(user_id, f"#{user_id}") for user_id in sorted(keep - known)]
    return forms.TypedChoiceField(
        choices=[("", "---------"), *options],
        coerce=int,
        empty_value=None,
        required=field.required,
        label=field.label,
        help_text=field.help_text,
    )


def names(portal_id: int, user_ids: list[int]) -> dict[int, str]:
    """user id → "Name (#id)" for the ids that are known."""
    rows = BitrixUser.objects.filter(portal_id=portal_id, user_id__in=user_ids)
    return {u.user_id: str(u) for u in rows}
