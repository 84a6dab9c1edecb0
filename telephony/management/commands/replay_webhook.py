"""`manage.py replay_webhook FIXTURE [FIXTURE ...] --url BASE_URL [--api-key K --api-salt S]`

Posts provider fixtures (`tests/fixtures/<provider>/<event>__<variant>.json`, each
`{"path": "events/call", "json": {...}}`) to a running server, in the order given. BASE_URL is
a connection's webhook_url; the fixture's path is appended to it, as Mango does. With an API
key and salt the payload goes Mango-style: form fields vpbx_api_key, sign, json, signed
sha256_hex(api_key + json + api_salt). Without them it goes as a JSON body.
"""

import json
from pathlib import Path
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError, CommandParser

TIMEOUT = (5, 30)  # (connect, read) seconds


class Command(BaseCommand):
    help = "Replay webhook fixture files against a running server (e.g. a connection's URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("fixtures", nargs="+", metavar="FIXTURE", help="fixture JSON files")
        parser.add_argument("--url", required=True, help="the connection's webhook_url")
        parser.add_argument("--api-key", default="", help="Mango vpbx_api_key: sign the posts")
        parser.add_argument("--api-salt", default="", help="Mango api_salt (with --api-key)")

    def handle(self, *args: object, **options: Any) -> None:
        key, salt = options["api_key"], options["api_salt"]
        if bool(key) != bool(salt):
            raise CommandError("--api-key and --api-salt go together")
        failed = []
        for fixture in options["fixtures"]:
            path, payload = _load(fixture)
            url = options["url"].rstrip("/") + "/" + path.lstrip("/")
            answer = _post(url, payload, key, salt)
            self.stdout.write(f"{fixture} → POST {url}: HTTP {answer.status_code}")
            self.stdout.write(answer.text)
            if not answer.ok:
                failed.append(fixture)
        if failed:
            raise CommandError(f"{len(failed)} of {len(options['fixtures'])} not accepted")


def _load(fixture: str) -> tuple[str, dict[str, Any]]:
    try:
        data = json.loads(Path(fixture).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read {fixture}: {exc}") from None
    if not (isinstance(data, dict) and isinstance(data.get("json"), dict)):
        raise CommandError(f'{fixture}: expected {{"path": "...", "json": {{...}}}}')
    return str(data.get("path") or ""), data["json"]


def _post(url: str, payload: dict[str, Any], key: str, salt: str) -> requests.Response:
    try:
        if key:
            from telephony.providers.mango import signed_form

            return requests.post(url, data=signed_form(key, salt, payload), timeout=TIMEOUT)
        return requests.post(url, json=payload, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise CommandError(f"POST {url} failed: {type(exc).__name__}: {exc}") from None
