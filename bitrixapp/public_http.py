"""Requests to PBXs and SMS gateways: to public internet addresses only.

Their URLs come from outside: a generic PBX posts the URL of each call's recording, a portal
admin sets a connection's or an SMS account's API URL, and Mango's and MTT's APIs answer with
the links their files are downloaded from. A URL pointing inside the network the app runs in
(cloud metadata at 169.254.169.254, Redis or PostgreSQL on localhost, an internal admin
page) would make the worker fetch it for a PBX's sender or a portal's admin, and hand the
answer back to them, e.g. as a "recording" in their portal (server-side request forgery).

The check is made on the address each connection actually reached: after DNS, on every
redirect, so a name that resolves to a public address when looked at and to a private one
when connected (DNS rebinding) gets nowhere either. Nothing is taken from the environment
for these requests (requests' trust_env): not a proxy, whose address would be the one
checked, nor a CA bundle or .netrc.
PROVIDERS_ALLOW_PRIVATE_HOSTS lifts the rule: for a PBX on the operator's own network, and
for the tests' and the demo's fakes on 127.0.0.1.
"""

import ipaddress
import socket
from typing import Any

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

ALLOW_HINT = "PROVIDERS_ALLOW_PRIVATE_HOSTS allows a PBX or gateway on your own network"


class PrivateAddress(Exception):
    """The URL led to an address inside a private network, the machine itself or a
    link-local range. Not an OSError on purpose: urllib3 would retry it as a network error."""


def refusal(exc: PrivateAddress) -> str:
    """What the admin reads on the failed recording, call or message."""
    return f"refused: {exc} (requests go to public internet addresses only; {ALLOW_HINT})"


def is_public(address: str) -> bool:
    """Whether an IP address is reachable on the public internet (not loopback, private,
    link-local, shared CGNAT, reserved or multicast); IPv4-mapped IPv6 is judged as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PublicPeer:
    """A urllib3 connection that closes itself unless the peer it reached is public."""

    host: str

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        peer = sock.getpeername()[0]
        if not is_public(peer):
            sock.close()
            raise PrivateAddress(f"{self.host} is at a private or local address ({peer})")
        return sock


class _PublicHTTPConnection(_PublicPeer, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicPeer, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }


def session() -> requests.Session:
    """A session for a provider's URLs: public addresses only, unless the operator allowed
    private ones (PROVIDERS_ALLOW_PRIVATE_HOSTS)."""
    http = requests.Session()
    if settings.PROVIDERS_ALLOW_PRIVATE_HOSTS:
        return http
    http.trust_env = False
    adapter = _PublicOnlyAdapter()
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http
