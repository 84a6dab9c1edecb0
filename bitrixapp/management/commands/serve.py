"""`make run`: migrate, print the URLs to enter in Bitrix24, run web, workers and beat.

honcho supervises the three processes: their output is interleaved with a name prefix, and
Ctrl-C (or one of them dying) stops all of them.
"""

import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from honcho.manager import Manager

WORK_QUEUES = "calls,recordings,sms,default"
DISPATCH_QUEUE = "bitrix"


class Command(BaseCommand):
    help = "Run web, Celery worker and beat in the foreground (the `make run` command)."

    def handle(self, *args: object, **options: object) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self._print_urls()
        manager = Manager()
        for name, cmd in self._processes().items():
            manager.add_process(name, cmd)
        manager.loop()
        sys.exit(manager.returncode)

    def _processes(self) -> dict[str, str]:
        py = sys.executable
        # Embedded mode: solo pools, and the rate limiter lives in the one dispatcher process.
        pool = "--pool=solo" if settings.EMBEDDED else "--concurrency=2"
        celery = f"{py} -m celery -A bitrixapp"
        return {
            "web": f"{py} -m gunicorn bitrixapp.wsgi --bind {settings.HOST}:{settings.PORT} "
            "--workers 2 --access-logfile -",
            # Call events, recordings and the like never queue behind Bitrix24 dispatch.
            "worker": f"{celery} worker -n worker@%h -Q {WORK_QUEUES} {pool} --loglevel INFO",
            "dispatcher": f"{celery} worker -n dispatcher@%h -Q {DISPATCH_QUEUE} {pool} "
            "--loglevel INFO",
            "beat": f"{celery} beat --loglevel INFO",
        }

    def _print_urls(self) -> None:
        base = settings.APP_BASE_URL
        mode = "embedded (SQLite, no Redis)" if settings.EMBEDDED else "PostgreSQL/Redis"
        lines = [
            f"Bitrix24 telephony & SMS bridge — {mode}, on {settings.HOST}:{settings.PORT}",
            "Enter these in the Bitrix24 application settings:",
            f"  Application URL (handler path)   {base}/bitrix/app/",
            f"  Initial installation path        {base}/bitrix/install/",
            f"  Event handler (bound on install) {base}/bitrix/events/",
            f"Admin: {base}/admin/  (create a login: .venv/bin/python manage.py createsuperuser)",
        ]
        if not base.startswith("https://"):
            lines.append("Note: Bitrix24 calls only public https URLs; set APP_BASE_URL to one.")
        self.stdout.write("\n".join(lines) + "\n")
