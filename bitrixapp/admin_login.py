"""The app page's "Open settings" button: a one-time link into the Django admin.

A portal admin, proven by the app page (application token + `profile`/`user.admin` with the
token Bitrix24 posted), gets a link valid for ADMIN_LOGIN_LINK_TTL_S seconds, bound to the
portal and to that Bitrix24 user. Only a SHA-256 hash of its secret is stored and compared in
constant time; the first use spends it. Using it logs the browser in as the Django user linked
to that portal admin (created on first use), whose admin is scoped to the portal
(bitrixapp.admin_scope). The link opens in a new tab: browsers block the admin's session cookie
inside the Bitrix24 iframe (a third-party cookie).
"""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from bitrixapp.http import secrets_equal
from bitrixapp.models import AdminLoginLink, Portal, PortalStaff
from bitrixapp.rest import PortalUser


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(portal: Portal, user: PortalUser) -> str:
    """A fresh one-time token "<id>.<secret>" for a verified portal admin."""
    if not user.is_admin:
        raise PermissionError("only portal administrators get an admin link")
    secret = secrets.token_urlsafe(32)
    link = AdminLoginLink.objects.create(
        portal=portal,
        bitrix_user_id=user.user_id,
        display_name=user.name,
        secret_hash=_hash(secret),
        expires_at=timezone.now() + timedelta(seconds=settings.ADMIN_LOGIN_LINK_TTL_S),
    )
    return f"{link.pk}.{secret}"


def redeem(token: str) -> AbstractBaseUser | None:
    """The Django user a valid, unused, unexpired token stands for (spending it); else None."""
    link_id, _dot, secret = str(token or "").partition(".")
    if not link_id.isascii() or not link_id.isdigit() or not secret or len(link_id) > 18:
        return None
    with transaction.atomic():
        link = (
            AdminLoginLink.objects.select_for_update()
            .select_related("portal")
            .filter(pk=int(link_id))
            .first()
        )
        if link is None or not secrets_equal(_hash(secret), link.secret_hash):
            return None
        if link.used_at is not None or link.expires_at <= timezone.now():
            return None
        if link.portal.status == Portal.Status.UNINSTALLED:
            return None
        link.used_at = timezone.now()
        link.save(update_fields=["used_at"])
        user = _staff_user(link)
    return user if user.is_active else None


def _staff_user(link: AdminLoginLink) -> AbstractBaseUser:
    """The Django login of this portal admin: made on first use, reused afterwards."""
    staff = (
        PortalStaff.objects.select_related("user")
        .filter(portal=link.portal, bitrix_user_id=link.bitrix_user_id)
        .first()
    )
    if staff is not None:
        return staff.user
    user = get_user_model().objects.create(
        username=f"b24-{link.portal.member_id}-{link.bitrix_user_id}"[:150],
        first_name=link.display_name[:150],
        is_staff=True,
    )
    user.set_unusable_password()  # no password: the app page is the only way in
    user.save(update_fields=["password"])
    PortalStaff.objects.create(user=user, portal=link.portal, bitrix_user_id=link.bitrix_user_id)
    return user
