"""The Celery app. Queues keep latencies apart:
`bitrix` (outbox dispatch), `calls`, `sms`, `recordings`, `default`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bitrixapp.settings")

app = Celery("bitrixapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
