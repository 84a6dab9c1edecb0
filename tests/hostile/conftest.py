"""Installs are verified with the Bitrix24 auth server: here the live fake stands in for it,
so hostile install tokens meet a real refusal (403) rather than an unreachable server (503)."""

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.fakes.bitrix24 import FakeBitrix24


@pytest.fixture(autouse=True, scope="module")
def _auth_server_is_the_fake(fake_server: FakeBitrix24) -> Iterator[None]:
    before = settings.BITRIX24_OAUTH_URL
    settings.BITRIX24_OAUTH_URL = fake_server.oauth_url
    yield
    settings.BITRIX24_OAUTH_URL = before
