"""`make demo`: start the fakes and the app, install a demo portal, configure it, play a scenario.

Order matters: the fakes start first (their ports go into the app's settings), then the
settings are fixed in the environment (VAR_DIR var/demo, embedded mode, the fake's auth
server, DEMO on) before Django is set up here and before the app's processes start under the
same supervisor as `make run`. The player runs in a thread; the supervisor keeps the main
thread so that Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import requests

from tests.fakes.bitrix24 import FakeBitrix24, FakePortal
from tests.fakes.generic import FakePbxFiles
from tests.fakes.mango import FakeMango
from tests.fakes.mts import FakeMts
from tests.fakes.mtt import FakeMtt

ROOT = Path(__file__).resolve().parent.parent
MEMBER_ID = "demo-office"
LINE = "74951234567"
MTT_LINE = "78127654321"  # the St Petersburg office's number, on MTT
ASTERISK_LINE = "74997001122"  # the warehouse's own Asterisk, posting the generic JSON
SENDER = "mts_sms_by"
RING_GROUP = "500"
# The sales office: Bitrix24 users with their PBX extensions (user 1 is the portal's admin).
STAFF = {11: ("Ivan", "101"), 12: ("Olga", "102"), 13: ("Petr", "103")}
# Whatever is set for the real app must not reach the demo: its own database and keys.
FOREIGN_SETTINGS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--scenario", default=os.environ.get("SCENARIO") or "office-hour")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--var-dir", default=str(ROOT / "var" / "demo"))
    parser.add_argument("--once", action="store_true", help="stop after the scenario")
    parser.add_argument("--report", help="write what was played and received here (JSON)")
    args = parser.parse_args(argv)
    return Demo(args, sys.stdout).run()


class Demo:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.var_dir = Path(args.var_dir).resolve()
        self.app_url = f"http://127.0.0.1:{args.port}"
        self.fake = FakeBitrix24(client_id="demo.app", client_secret=secrets.token_hex(16))
        self.mango = FakeMango(secrets.token_hex(8), secrets.token_hex(8))
        self.mtt = FakeMtt(api_key=secrets.token_hex(8))
        self.mts = FakeMts(client_id="4242", login="office", password=secrets.token_hex(8))
        # The generic PBX posts its own webhooks (the player signs them); its web server only
        # hands out the recordings its webhooks link to.
        self.pbx_files = FakePbxFiles()
        # Next to the app's port, so the links stay the same from run to run.
        self.fakes = (self.fake, self.mango, self.mtt, self.mts, self.pbx_files)
        for offset, fake in enumerate(self.fakes, 1):
            fake.listen_port = args.port + offset
        self.status = 0
        self.supervisor: Any = None

    def say(self, line: str) -> None:
        self.out.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        self.out.flush()

    def run(self) -> int:
        from demo import scenario

        chosen = scenario.load(self.args.scenario)  # a typo fails before anything starts
        self._fresh_var_dir()
        for fake in self.fakes:
            fake.start()
        self.fake.app_url = f"{self.app_url}/bitrix/app/"
        self._environment()
        import django

        django.setup()
        from django.core.management import call_command

        from bitrixapp.management.commands.serve import processes
        from bitrixapp.supervisor import Supervisor

        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        log = (self.var_dir / "app.log").open("w", buffering=1)
        self.say(f"App logs: {self.var_dir / 'app.log'}")
        self.supervisor = Supervisor(processes(), out=log)
        threading.Thread(target=self._script, args=(chosen,), daemon=True).start()
        self.supervisor.run()
        for fake in self.fakes:
            fake.stop()
        return self.status

    def _fresh_var_dir(self) -> None:
        # Every run starts afresh: the fakes forget everything when they stop.
        if self.var_dir.name != "demo" and not (self.var_dir / ".demo").exists():
            raise SystemExit(f"refusing to wipe {self.var_dir}: not a demo directory")
        shutil.rmtree(self.var_dir, ignore_errors=True)
        self.var_dir.mkdir(parents=True, mode=0o700)
        (self.var_dir / ".demo").touch()

    def _environment(self) -> None:
        for name in FOREIGN_SETTINGS:
            os.environ.pop(name, None)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="bitrixapp.settings",
            VAR_DIR=str(self.var_dir),
            DEMO="1",
            # The sign-in link is printed at the end of the run and opened whenever the person
            # gets to it: longer-lived than the app page's two minutes, still used once.
            ADMIN_LOGIN_LINK_TTL_S="86400",
            HOST="127.0.0.1",
            PORT=str(self.args.port),
            APP_BASE_URL=self.app_url,
            BITRIX24_CLIENT_ID=self.fake.client_id,
            BITRIX24_CLIENT_SECRET=self.fake.client_secret,
            BITRIX24_OAUTH_URL=self.fake.oauth_url,
            BITRIX24_ALLOW_HTTP="1",
            PROVIDERS_ALLOW_PRIVATE_HOSTS="1",  # the fake PBXs' recordings are on 127.0.0.1
            # The fakes stand in for the internet: the JS SDK is not loaded from Bitrix24.
            BITRIX24_JS_SDK_URL=f"{self.fake.base_url}/portal/bx24.js",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )

    # The script (player thread) ------------------------------------------------------------

    def _script(self, chosen: Any) -> None:
        try:
            self._play(chosen)
        except Exception as exc:  # tell the person, then stop everything
            traceback.print_exc()
            self.say(f"The demo stopped: {exc}")
            self.status = 1
            self.supervisor.stop()
            return
        finally:
            from django.db import connection

            connection.close()
        if self.args.once:
            self.supervisor.stop()
        else:
            self.say("Ctrl-C stops everything.")

    def _play(self, chosen: Any) -> None:
        from demo.player import Office, Player

        self._wait_for_app()
        remote = self._portal()
        self._install(remote)
        connections, sender = self._configure(remote)
        office = Office(
            self.app_url,
            self.fake,
            remote,
            connections,
            LINE,
            pbx={"mango": self.mango, "mtt": self.mtt, "generic": self.pbx_files},
            mts=self.mts,
            sender=sender,
        )
        player = Player(office, self.say)
        player.settle()
        report = player.play(chosen)
        report["links"] = self._links()
        report["member_id"] = MEMBER_ID
        if self.args.report:
            Path(self.args.report).write_text(json.dumps(report, indent=2, default=str))

    def _wait_for_app(self) -> None:
        self.say(f"Starting the app on {self.app_url} (embedded: SQLite under {self.var_dir})")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.app_url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the app did not start; see {self.var_dir / 'app.log'}")

    def _portal(self) -> FakePortal:
        remote = self.fake.add_portal(MEMBER_ID, domain=self.fake.domain)
        remote.users[0]["NAME"] = "Anna"  # the admin who installs the app
        for user_id, (name, extension) in STAFF.items():
            remote.add_user(user_id, NAME=name, UF_PHONE_INNER=extension)
        self.say(f"Fake Bitrix24 portal {remote.domain} (users Anna — admin, Ivan, Olga, Petr)")
        return remote

    def _install(self, remote: FakePortal) -> None:
        """The install frame POST Bitrix24 sends when the admin installs the app; the app
        checks the tokens with the (fake) auth server."""
        query = {"DOMAIN": remote.domain, "PROTOCOL": "0", "LANG": "ru", "APP_SID": "demo"}
        form = remote.frame_payload() | {"PLACEMENT": "DEFAULT"}
        answer = requests.post(
            f"{self.app_url}/bitrix/install/", params=query, data=form, timeout=30
        )
        if answer.status_code != 200:
            raise RuntimeError(f"install refused: {answer.status_code} {answer.text[:300]}")
        self.say("Installed the app on the portal through /bitrix/install/ (tokens verified)")

    def _configure(self, remote: FakePortal) -> tuple[dict[str, Any], Any]:
        """Import the demo's configuration file; the connections by provider, and the sender."""
        from django.core.management import call_command

        from sms.models import SmsSender
        from telephony.models import PbxConnection

        extensions = {ext: user for user, (_, ext) in STAFF.items()}
        config = {
            "portal": MEMBER_ID,
            "pbx": [
                {
                    "name": "Moscow office (Mango Office)",
                    "provider": "mango",
                    "credentials": {"api_key": self.mango.api_key, "api_salt": self.mango.api_salt},
                    "api_url": self.mango.api_url,
                    "default_user_id": 1,
                    "missed_call_min_duration_s": 10,
                    "callback_extension": RING_GROUP,
                    # Bitrix24 knows a call's PBX only by its line: the names say which.
                    "lines": [
                        {"number": f"+{LINE}", "line_number": LINE, "name": "Sales · Mango"},
                        {
                            "number": "+74957654321",
                            "line_number": "74957654321",
                            "name": "Support · Mango",
                        },
                    ],
                    "extensions": extensions,
                },
                {
                    "name": "St Petersburg (MTT)",
                    "provider": "mtt",
                    "credentials": {"api_key": self.mtt.api_key, "secret": secrets.token_hex(8)},
                    "api_url": self.mtt.api_url,
                    "default_user_id": 1,
                    "lines": [
                        {"number": f"+{MTT_LINE}", "line_number": MTT_LINE, "name": "SPb · MTT"}
                    ],
                    "extensions": extensions,
                },
                {
                    "name": "Warehouse Asterisk (generic JSON)",
                    "provider": "generic",
                    "credentials": {"secret": secrets.token_hex(16)},
                    "default_user_id": 1,
                    "lines": [
                        {
                            "number": f"+{ASTERISK_LINE}",
                            "line_number": ASTERISK_LINE,
                            "name": "Warehouse · Asterisk",
                        }
                    ],
                    "extensions": extensions,
                },
            ],
            "sms": [
                {
                    "name": "MTS SMS",
                    "provider": "mts_by",
                    "credentials": {
                        "client_id": self.mts.client_id,
                        "login": self.mts.login,
                        "password": self.mts.password,
                    },
                    "api_url": self.mts.api_url,
                    "senders": [{"code": SENDER, "name": "MTS SMS", "alpha_name": "OFFICE"}],
                }
            ],
        }
        path = self.var_dir / "demo-config.json"
        path.write_text(json.dumps(config, indent=2))
        call_command("import_config", str(path), stdout=open(os.devnull, "w"))  # noqa: SIM115
        self.say(
            f"Imported {path.name}: Mango (2 lines), MTT and an Asterisk posting generic JSON "
            f"(a line each), extensions 101-103 (ring group {RING_GROUP}); an MTS SMS account "
            f"with sender {SENDER} (delivery reports pushed to the app)"
        )
        connections = PbxConnection.objects.filter(portal__member_id=MEMBER_ID)
        sender = SmsSender.objects.get(portal__member_id=MEMBER_ID, code=SENDER)
        return {c.provider: c for c in connections}, sender

    def _admin_token(self) -> str:
        """A one-time admin link for Anna, the demo portal's admin: the same link the app
        page's "Open settings" button gives a portal admin (scoped to the portal)."""
        from bitrixapp import admin_login
        from bitrixapp.models import Portal
        from bitrixapp.rest import PortalUser

        portal = Portal.objects.get(member_id=MEMBER_ID)
        return admin_login.issue(portal, PortalUser(user_id=1, name="Anna", is_admin=True))

    def _links(self) -> dict[str, str]:
        links = {
            "app": f"{self.fake.base_url}/portal/{MEMBER_ID}/app/",
            "journal": f"{self.app_url}/admin/telephony/call/",
            "journal_login": f"{self.app_url}/demo/login/{self._admin_token()}/",
            "received": f"{self.fake.base_url}/portal/calls/",
        }
        self.say("Open these:")
        self.say(f"  The app as the portal shows it   {links['app']}")
        self.say(f"  The call journal (admin)         {links['journal_login']}")
        self.say(
            "    (a one-time sign-in as the portal's admin; later, the app page's "
            "“Open settings” button)"
        )
        self.say(f"  What Bitrix24 received per call  {links['received']}")
        return links
