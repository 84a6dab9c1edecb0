"""`manage.py replay_webhook FIXTURE [FIXTURE ...] --url BASE_URL [--provider SLUG]
[--credential KEY=VALUE ...]`

Posts provider fixtures (`tests/fixtures/<provider>/<event>__<variant>.json`, each
`{"path": "events/call", "json": {...}, "headers": {...}}`, headers optional) to a running
server, in the order given. BASE_URL is a connection's webhook_url; the fixture's path is
appended to it, as the PBX does. With credentials, each fixture is sent exactly as that
provider's PBX would send it, signed (the provider's `sign_fixture`; Mango:
`--credential api_key=... --credential api_salt=...`). Without them the payload goes unsigned
as a JSON body. The provider defaults to the folder the fixture is in.
"""

import json
from pathlib import Path
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError, CommandParser

from telephony import providers
from telephony.providers.base import SignedWebhook

TIMEOUT = (5, 30)  # (connect, read) seconds


class Command(BaseCommand):
    help = "Replay webhook fixture files against a running server (e.g. a connection's URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("fixtures", nargs="+", metavar="FIXTURE", help="fixture JSON files")
        parser.add_argument("--url", required=True, help="the connection's webhook_url")
        parser.add_argument(
            "--provider", default="", help="sign as this provider (default: the fixture's folder)"
        )
        parser.add_argument(
            "--credential",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a credential of the connection, to sign with (repeat for each key)",
        )

    def handle(self, *args: object, **options: Any) -> None:
        credentials = _credentials(options["credential"])
        failed = []
        for fixture in options["fixtures"]:
            path, payload, headers = _load(fixture)
            hook = _request(fixture, options["provider"], credentials, path, payload, headers)
            url = options["url"].rstrip("/") + "/" + hook.path.lstrip("/")
            answer = _post(url, hook)
            self.stdout.write(f"{fixture} → POST {url}: HTTP {answer.status_code}")
            self.stdout.write(answer.text)
            if not answer.ok:
                failed.append(fixture)
        if failed:
            raise CommandError(f"{len(failed)} of {len(options['fixtures'])} not accepted")


def _credentials(pairs: list[str]) -> dict[str, str]:
    credentials = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--credential takes KEY=VALUE, not {pair!r}")
        credentials[key] = value
    return credentials


def _load(fixture: str) -> tuple[str, Any, dict[str, str]]:
    try:
        data = json.loads(Path(fixture).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read {fixture}: {exc}") from None
    if not (isinstance(data, dict) and isinstance(data.get("json"), dict | list)):
        raise CommandError(f'{fixture}: expected {{"path": "...", "json": {{...}}}}')
    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise CommandError(f"{fixture}: headers must be a mapping")
    return str(data.get("path") or ""), data["json"], {str(k): str(v) for k, v in headers.items()}


def _request(
    fixture: str,
    slug: str,
    credentials: dict[str, str],
    path: str,
    payload: Any,
    headers: dict[str, str],
) -> SignedWebhook:
    if not credentials:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return SignedWebhook(path, body, "application/json", headers)
    slug = slug or Path(fixture).resolve().parent.name
    if slug not in providers.REGISTRY:
        known = ", ".join(sorted(providers.REGISTRY))
        raise CommandError(f"unknown provider {slug!r} (known: {known}); give --provider")
    provider = providers.get(slug)
    missing = [key for key in provider.credential_keys if not credentials.get(key)]
    if missing:
        raise CommandError(f"{slug} signs with {', '.join(missing)}: give --credential KEY=VALUE")
    return provider.sign_fixture(credentials, path, payload, headers)


def _post(url: str, hook: SignedWebhook) -> requests.Response:
    try:
        return requests.post(
            url,
            data=hook.body,
            headers={"Content-Type": hook.content_type, **hook.headers},
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        raise CommandError(f"POST {url} failed: {type(exc).__name__}: {exc}") from None
