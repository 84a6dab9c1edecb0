"""Downloads from webhook-given URLs reach public addresses only (bitrixapp.public_http)."""

import http.server
import threading
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


# ---------------------------------------------------------------- redirects

PUBLIC = "127.0.0.2"  # a loopback address, called public by the stub below


@pytest.fixture
def public_redirector(monkeypatch):
    """A host standing for a public one (127.0.0.2, which this test's `is_public` calls
    public: nothing public is reachable from here) answering every GET with a redirect to
    `target` (set by the test); counts the GETs it answered."""
    real_is_public = public_http.is_public
    monkeypatch.setattr(public_http, "is_public", lambda a: a == PUBLIC or real_is_public(a))
    answered = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            answered.append(self.path)
            self.send_response(302)
            self.send_header("Location", server.target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((PUBLIC, 0), Redirect)
    server.target = ""
    server.answered = answered
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_redirect_from_a_public_host_to_a_private_one_is_refused(
    public_redirector, local_server, settings
):
    """The check is made on every connection, so a public URL cannot bounce the request
    inside (a redirect to the metadata service or to localhost)."""
    settings.PROVIDERS_ALLOW_PRIVATE_HOSTS = False
    public_redirector.target = local_server.url("rec.wav")
    url = f"http://{PUBLIC}:{public_redirector.server_port}/recording"
    with public_http.session() as http_session, pytest.raises(public_http.PrivateAddress):
        http_session.get(url, timeout=5)
    assert public_redirector.answered == ["/recording"]  # the public host was asked
    assert not local_server.gets  # the private one never was


def test_mango_refuses_a_recording_link_inside_the_network(local_server, settings):
    """Mango's API answers with the link a recording is downloaded from: it goes through the
    same rule, and the refusal is final (retrying would reach the same address)."""
    from telephony.providers import mango
    from telephony.providers.base import ProviderError

    settings.PROVIDERS_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(ProviderError, match="private or local address") as refused:
        mango.Mango()._download(local_server.url("rec.wav"), "r1")
    assert refused.value.permanent
    assert not local_server.gets
