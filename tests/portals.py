"""A portal row of ours wired to a portal of the Bitrix24 fake (same tokens), for tests and
benchmarks alike."""

from typing import Any

from django.conf import settings

from bitrixapp.models import Portal
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal


def connected_portal(
    fake: FakeBitrix24, member_id: str, plan: str = "standard", **fields: Any
) -> tuple[Portal, FakePortal]:
    remote = fake.add_portal(member_id=member_id, domain=f"{member_id}.bitrix24.ru", plan=plan)
    portal = Portal.objects.create(
        member_id=remote.member_id,
        domain=remote.domain,
        client_endpoint=remote.client_endpoint,
        access_token=remote.access_token,
        refresh_token=remote.refresh_token,
        application_token=remote.application_token,
        events_bound_version=settings.APP_VERSION,
        **fields,
    )
    return portal, remote
