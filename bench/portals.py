"""Portals for the benchmarks: installed in our database and, when needed, in the fake.

Import only after `bench.env.configure()` (these helpers use Django models).
"""

import contextlib
from collections.abc import Iterator

from django.conf import settings

import tests.portals
from bitrixapp.models import Portal
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal


@contextlib.contextmanager
def fake_bitrix24() -> Iterator[FakeBitrix24]:
    """The live fake, in this process (its timestamps are on our time.monotonic())."""
    with FakeBitrix24(
        client_id=settings.BITRIX24_CLIENT_ID, client_secret=settings.BITRIX24_CLIENT_SECRET
    ) as fake:
        fake.enforce_rate_limit = True
        yield fake


def connected_portal(
    fake: FakeBitrix24, member_id: str, plan: str = "standard"
) -> tuple[Portal, FakePortal]:
    """A portal known to the fake with our row's tokens matching (the tests' helper)."""
    return tests.portals.connected_portal(fake, member_id, plan, detected_plan=plan)


def installed_portal(member_id: str, application_token: str) -> Portal:
    """A portal row only (no fake): enough for inbound events, which never call Bitrix24."""
    return Portal.objects.create(
        member_id=member_id,
        domain=f"{member_id}.bitrix24.ru",
        client_endpoint=f"https://{member_id}.bitrix24.ru/rest/",
        access_token="bench-access",
        refresh_token="bench-refresh",
        application_token=application_token,
        events_bound_version=settings.APP_VERSION,
    )
