"""`make run`: migrate, collect static files, print the URLs to enter in Bitrix24, then run
web, worker, the SMS worker, dispatcher and beat under the supervisor (bitrixapp.supervisor): output
prefixed per process, a crashed process restarted, Ctrl-C stops all of them.
"""

import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from bitrixapp.supervisor import Supervisor

WORK_QUEUES = "calls,recordings,default"
# A campaign's sends wait for the account's rate inside the worker (up to 2 s each): a worker
# of their own, so that they never hold up call events.
SMS_QUEUE = "sms"
DISPATCH_QUEUE = "bitrix"


def processes() -> dict[str, list[str]]:
    """The command lines of web, worker, SMS worker, dispatcher and beat (`make run`,
    `make demo`)."""
    # Embedded mode: solo pools, and the rate limiter lives in the one dispatcher process.
    pool = "--pool=solo" if settings.EMBEDDED else "--concurrency=2"
    celery = "-m celery -A bitrixapp"
    commands = {
        "web": "-m gunicorn bitrixapp.wsgi -c python:bitrixapp.gunicorn_conf "
        f"--bind {settings.HOST}:{settings.PORT}",
        # Call events, recordings and the like never queue behind Bitrix24 dispatch.
        "worker": f"{celery} worker -n worker@%h -Q {WORK_QUEUES} {pool} --loglevel INFO",
        "sms": f"{celery} worker -n sms@%h -Q {SMS_QUEUE} {pool} --loglevel INFO",
        "dispatcher": f"{celery} worker -n dispatcher@%h -Q {DISPATCH_QUEUE} {pool} "
        "--loglevel INFO",
        "beat": f"{celery} beat --loglevel INFO",
    }
    # sys.executable stays one argument even if its path has spaces.
    return {name: [sys.executable, *args.split()] for name, args in commands.items()}


class Command(BaseCommand):
    help = "Run web, Celery worker, SMS worker, dispatcher and beat in the foreground (`make run`)."

    def handle(self, *args: object, **options: object) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        if not settings.DEBUG:
            # The manifest storage serves hashed names listed by collectstatic (fast when
            # nothing changed); DEBUG serves the apps' files directly instead.
            call_command("collectstatic", interactive=False, verbosity=0)
        self._print_banner()
        sys.exit(Supervisor(processes(), out=sys.stdout).run())

    def _print_banner(self) -> None:
        base = settings.APP_BASE_URL
        mode = "embedded (SQLite, no Redis)" if settings.EMBEDDED else "PostgreSQL/Redis"
        debug = "DEBUG on" if settings.DEBUG else "DEBUG off (DEBUG=1 make run turns it on)"
        lines = [
            f"Bitrix24 telephony & SMS bridge — {mode}, {debug}",
            f"Listening on {settings.HOST}:{settings.PORT}",
            "Enter these in the Bitrix24 application settings:",
            f"  Application URL (handler path)   {base}/bitrix/app/",
            f"  Initial installation path        {base}/bitrix/install/",
            f"  Event handler (bound on install) {base}/bitrix/events/",
            f"Admin: {base}/admin/  (create a login: .venv/bin/python manage.py createsuperuser)",
        ]
        if settings.KEY_FILES_ALLOWED:
            lines.append(
                f"Keys: {settings.VAR_DIR}/secret_key and field_encryption_keys unless set in "
                "the environment; back them up with the database."
            )
        if not base.startswith("https://"):
            lines.append("Note: Bitrix24 calls only public https URLs; set APP_BASE_URL to one.")
        self.stdout.write("\n".join(lines) + "\n")
