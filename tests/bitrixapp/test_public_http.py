"""Downloads from webhook-given URLs reach public addresses only (bitrixapp.public_http)."""

from types import SimpleNamespace

import pytest

from bitrixapp import public_http
from tests.fakes.generic import FakePbxFiles


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared address space (carrier NAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::1", False),
        ("fe80::1%eth0", False),
    ],
)
def test_what_counts_as_public(address, public):
    assert public_http.is_public(address) is public


@pytest.fixture
def local_server():
    """The fake PBX file server (tests/fakes/generic.py) on 127.0.0.1, counting its GETs:
    here an internal host the app must not reach."""
    with FakePbxFiles() as files:
        files.files["rec.wav"] = b"RIFF"
        yield files


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_private_address_is_refused_before_any_request_is_sent(local_server, settings, host):
    settings.PROVIDERS_ALLOW_PRIVATE_HOSTS = False
    with public_http.session() as http_session, pytest.raises(public_http.PrivateAddress):
        http_session.get(f"http://{host}:{local_server.port}/rec.wav", timeout=5)
    assert not local_server.gets


def test_the_operator_can_allow_private_addresses(local_server, settings):
    settings.PROVIDERS_ALLOW_PRIVATE_HOSTS = True
    with public_http.session() as http_session:
        assert http_session.get(local_server.url("rec.wav"), timeout=5).content == b"RIFF"
    assert local_server.gets == {"rec.wav": 1}


# ---------------------------------------------------------------- every provider's requests


@pytest.fixture
def refused_provider_requests(local_server, settings, monkeypatch):
    """The rule on, the local server standing for an internal host a portal admin typed in
    as an API URL, the SMS provider's per-thread session made anew under the rule."""
    from sms.providers import mts_by

    settings.PROVIDERS_ALLOW_PRIVATE_HOSTS = False
    monkeypatch.delattr(mts_by._local, "session", raising=False)
    yield local_server.url(""), local_server.gets
    monkeypatch.delattr(mts_by._local, "session", raising=False)


def _configured(api_url, **credentials):
    return SimpleNamespace(api_url=api_url, credentials=credentials)


def test_mango_mtt_and_mts_refuse_an_api_url_inside_the_network(refused_provider_requests):
    from sms.providers.base import SendError
    from sms.providers.mts_by import MtsCommunicator
    from telephony.providers import mango, mtt
    from telephony.providers.base import ProviderError

    api_url, hits = refused_provider_requests
    attempts = [
        (
            ProviderError,
            lambda: mango.Mango()._post(
                _configured(api_url, api_key="k", api_salt="s"), "commands/callback", {}
            ),
        ),
        (ProviderError, lambda: mtt.Mtt().fetch_recording(_configured(api_url, api_key="k"), "r1")),
        (SendError, lambda: MtsCommunicator().poll(_configured(api_url, client_id="1"), "m1")),
    ]
    for error, attempt in attempts:
        with pytest.raises(error, match="private or local address") as refused:
            attempt()
        assert refused.value.permanent
    assert not hits
