"""Test settings: the real settings module, pointed at local PostgreSQL and Redis.

TEST_DATABASE_URL / TEST_REDIS_URL override the defaults (the local servers of this machine).
"""

import os

os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
)
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("BITRIX24_ALLOW_HTTP", "1")
# The fake PBXs serve their recordings on 127.0.0.1 (tests of the rule switch it off).
os.environ.setdefault("PROVIDERS_ALLOW_PRIVATE_HOSTS", "1")
os.environ.setdefault("BITRIX24_CLIENT_ID", "app.test")
os.environ.setdefault("BITRIX24_CLIENT_SECRET", "test-client-secret")
os.environ.setdefault("APP_BASE_URL", "https://bridge.example.com")
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEYS", "aO3_uqy0d6BZHmwAqPDjMXZDyRUL-BjsI5Z9nnlQZTc=,old-passphrase-key"
)
# Short read timeout so that "slow Bitrix24" tests do not take a minute.
os.environ.setdefault("BITRIX24_READ_TIMEOUT", "3")

from bitrixapp.settings import *  # noqa: F403

# The crash tests run a real beat; a short sweep cadence keeps their recovery waits short.
if os.environ.get("TEST_SWEEP_INTERVAL_S"):
    for _entry in CELERY_BEAT_SCHEDULE.values():  # noqa: F405
        if _entry["task"].endswith(".sweep"):
            _entry["schedule"] = float(os.environ["TEST_SWEEP_INTERVAL_S"])
