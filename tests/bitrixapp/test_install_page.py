"""The install page in a real browser: it must call BX24.installFinish(), or Bitrix24 never
delivers events (Bitrix24 REST docs: settings/app-installation). Headless Chromium posts the
install frame form to a live server; the page loads a stub of the Bitrix24 JS SDK that reports
the call back to us."""

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest

from bitrixapp.models import B24Command, Portal

pytestmark = pytest.mark.django_db(transaction=True)

SDK_STUB = b"""
(function () {
  var report = new URL("/install-finished", document.currentScript.src).href;
  window.BX24 = {
    init: function (cb) { setTimeout(cb, 10); },
    installFinish: function () { new Image().src = report; }
  };
})();
"""


class _Stub(BaseHTTPRequestHandler):
    hits: list[str] = []
    start_page = b""

    def do_GET(self) -> None:
        _Stub.hits.append(self.path)
        body, ctype = {
            "/bx24.js": (SDK_STUB, "application/javascript"),
            "/start.html": (_Stub.start_page, "text/html"),
        }.get(self.path, (b"", "image/gif"))
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_sdk():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stub.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (scripts/ensure-browser.sh installs it)")
        pytest.skip("chromium is not installed")
    return path


def _auto_post_page(action: str, fields: dict[str, str]) -> bytes:
    inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
    return (
        f'<form id="f" method="post" action="{action}">{inputs}</form>'
        '<script>document.getElementById("f").submit();</script>'
    ).encode()


def test_install_page_calls_install_finish_in_a_real_browser(
    live_server, stub_sdk, settings, tmp_path, fake
):
    settings.BITRIX24_JS_SDK_URL = f"{stub_sdk}/bx24.js"
    # The auth server vouches for the tokens the page posts, and names the portal's endpoint.
    fake.add_portal(
        "browser1", access_token="acc", refresh_token="ref"
    ).endpoint = "https://acme.bitrix24.ru/rest/"
    query = urlencode({"DOMAIN": "acme.bitrix24.ru", "PROTOCOL": "1", "LANG": "ru", "APP_SID": "s"})
    _Stub.start_page = _auto_post_page(
        f"{live_server.url}/bitrix/install/?{query}",
        {
            "AUTH_ID": "acc",
            "AUTH_EXPIRES": "3600",
            "REFRESH_ID": "ref",
            "member_id": "browser1",
            "APPLICATION_TOKEN": "apptok",
            "status": "L",
            "PLACEMENT": "DEFAULT",
        },
    )
    dom = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"{stub_sdk}/start.html",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    assert "Установлено." in dom  # LANG=ru: the page speaks the portal's language
    assert "/install-finished" in _Stub.hits
    portal = Portal.objects.get(member_id="browser1")
    assert portal.client_endpoint == "https://acme.bitrix24.ru/rest/"
    assert B24Command.objects.filter(portal=portal, method="event.bind").count() == 3
