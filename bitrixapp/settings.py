"""Settings, all from the environment (django-environ); see README for every variable.

With nothing set this is the embedded mode of `make run`: SQLite under VAR_DIR (`var/`), Celery
on the filesystem transport, no Redis, DEBUG off, and SECRET_KEY and FIELD_ENCRYPTION_KEYS
generated on first run into key files under VAR_DIR. `make run` and every management command
load exactly these settings, so they always agree. DATABASE_URL / REDIS_URL switch to
PostgreSQL and Redis; with DATABASE_URL (and DEBUG off) the keys must come from the environment.
"""

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from bitrixapp import keyfiles

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
SQLITE_PATH = VAR_DIR / "db.sqlite3"

DEBUG = env.bool("DEBUG", default=False)

# Key files live next to the SQLite database they protect. A deployment on an external
# database passes its keys in the environment instead: its processes may run on hosts (or in
# containers) that share no VAR_DIR, and a key file lost with a container would leave every
# stored token unreadable. DEBUG (a developer's machine) may use key files with any database.
KEY_FILES_ALLOWED = DEBUG or not env.str("DATABASE_URL", default="")
# What earlier versions encrypted with when `make run` had no keys (derived from a fixed,
# public SECRET_KEY); kept readable once, until `rotate_encryption_keys` (see key file).
LEGACY_DEV_FIELD_KEY = "derived:dev-insecure-secret-key-change-me-" + "x" * 20


def _from_env_or_key_file(name: str, filename: str, generate: Callable[[], str]) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if not KEY_FILES_ALLOWED:
        raise ImproperlyConfigured(
            f"{name} must be set when DATABASE_URL is set and DEBUG is off "
            "(docs/operations.md, section 1)"
        )
    return keyfiles.read_or_create(VAR_DIR / filename, generate)


def _new_field_keys() -> str:
    return keyfiles.new_field_keys(LEGACY_DEV_FIELD_KEY if SQLITE_PATH.exists() else None)


SECRET_KEY = _from_env_or_key_file("SECRET_KEY", "secret_key", keyfiles.new_secret_key).strip()
FIELD_ENCRYPTION_KEYS = keyfiles.parse_field_keys(
    _from_env_or_key_file("FIELD_ENCRYPTION_KEYS", "field_encryption_keys", _new_field_keys)
)
if not FIELD_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS: no key in it or in {VAR_DIR}")

HOST = env.str("HOST", default="127.0.0.1")
PORT = env.int("PORT", default=8000)
APP_BASE_URL = env.str("APP_BASE_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
# The public URL decides the host names to answer to and whether the HTTPS-only protections
# apply: on plain http://127.0.0.1 (make run, no tunnel) secure cookies would never be sent
# back and an HTTPS redirect would lock the browser out.
_public = urlsplit(APP_BASE_URL)
PUBLIC_HTTPS = _public.scheme == "https"
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS",
    default=[h for h in dict.fromkeys([_public.hostname, "127.0.0.1", "localhost"]) if h],
)
CSRF_TRUSTED_ORIGINS = [f"{_public.scheme}://{_public.netloc}"]
APP_VERSION = "0.1.0"

BITRIX24_CLIENT_ID = env.str("BITRIX24_CLIENT_ID", default="")
BITRIX24_CLIENT_SECRET = env.str("BITRIX24_CLIENT_SECRET", default="")
BITRIX24_OAUTH_URL = env.str("BITRIX24_OAUTH_URL", default="https://oauth.bitrix.info/oauth/token/")
BITRIX24_ALLOW_HTTP = env.bool("BITRIX24_ALLOW_HTTP", default=False)
# PBX and SMS gateway requests (API URLs, recording links) go to public addresses only
# (bitrixapp.public_http); on for a PBX or gateway inside the operator's own network.
PROVIDERS_ALLOW_PRIVATE_HOSTS = env.bool("PROVIDERS_ALLOW_PRIVATE_HOSTS", default=False)
# Bitrix24 cuts a request off at 60 s; waiting a little longer means a slow answer is still
# read instead of being resent (which could apply the command twice).
BITRIX24_TIMEOUT = (5.0, env.float("BITRIX24_READ_TIMEOUT", default=65.0))
# How long a command keeps retrying transient failures before it is failed for good.
BITRIX24_RETRY_HORIZON_S = env.int("BITRIX24_RETRY_HORIZON_S", default=24 * 3600)
# Exponential backoff between those retries (2, 4, 8 ... s) stops growing here.
BITRIX24_RETRY_MAX_DELAY_S = env.int("BITRIX24_RETRY_MAX_DELAY_S", default=300)
# Commands per batch request (Bitrix24 allows 50); 1 turns batching off.
BITRIX24_BATCH_MAX = max(1, min(50, env.int("BITRIX24_BATCH_MAX", default=50)))
# Per-method execution-time budget in a sliding 10 minutes (Bitrix24 REST docs: limits.md;
# 480 s historically).
BITRIX24_OPERATING_LIMIT_S = env.float("BITRIX24_OPERATING_LIMIT_S", default=480.0)
BITRIX24_JS_SDK_URL = env.str("BITRIX24_JS_SDK_URL", default="//api.bitrix24.com/api/v1/")

WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=256 * 1024)
# Also caps bodies sent without Content-Length (chunked), which the views cannot pre-check.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(WEBHOOK_MAX_BODY_BYTES, 2621440)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API docs page's scripts, served here: no CDN needed
    "bitrixapp",
    "telephony",
    "sms",
]

MIDDLEWARE = [
    # First: JSON error answers even for what Django refuses before reaching a view.
    "bitrixapp.http.JsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Webhooks answered 503 + Retry-After while PostgreSQL is down (senders retry).
    "bitrixapp.middleware.DatabaseUnavailableMiddleware",
    # PBX webhooks, Bitrix24 events, the SMS handler and delivery reports stop here: the
    # middleware below serves people's pages only.
    "bitrixapp.middleware.ServerEndpointsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Russian or English: the app page takes Bitrix24's LANG (bitrixapp.app_page), every other
    # page the browser's Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# `make demo` (demo/): a banner on every page says the portal and the PBX are fakes.
DEMO = env.bool("DEMO", default=False)
if DEMO:
    MIDDLEWARE.append("demo.banner.DemoBannerMiddleware")

ROOT_URLCONF = "bitrixapp.urls"
WSGI_APPLICATION = "bitrixapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and beat share one file: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions make writers queue instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The same backend, with a health check that needs no round trip (its docstring).
        DATABASES["default"]["ENGINE"] = "bitrixapp.pgbackend"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not REDIS_URL

if EMBEDDED:
    # Shared by the web, worker and beat processes of `make run`.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir),
    }
else:
    CACHES = {"default": {"BACKEND": "bitrixapp.cache.RedisCache", "LOCATION": REDIS_URL}}
    CELERY_BROKER_URL = REDIS_URL
    # Longer than the longest retry countdown (recording downloads wait up to an hour), so
    # that Redis does not hand a waiting task to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}

CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes the database connection around every task unless this is set;
# bitrixapp.celery closes it the way Django does for requests (CONN_MAX_AGE, or when broken).
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "bitrixapp.tasks.dispatch_portal": {"queue": "bitrix"},
    "telephony.tasks.originate": {"queue": "calls"},
    "telephony.tasks.download_recording": {"queue": "recordings"},
    "telephony.tasks.upload_recording": {"queue": "recordings"},
    "sms.tasks.send_message": {"queue": "sms"},
    "sms.tasks.poll_statuses": {"queue": "sms"},
}
CELERY_BEAT_SCHEDULE = {
    "sweep-outbox": {"task": "bitrixapp.tasks.sweep", "schedule": 30.0},
    # Often: a killed dispatcher's commands (15 s lease) go again within ~20 s.
    "release-outbox-leases": {"task": "bitrixapp.tasks.release_leases", "schedule": 5.0},
    "expire-parked-commands": {"task": "bitrixapp.tasks.expire_parked", "schedule": 300.0},
    "resume-recordings": {"task": "telephony.tasks.resume_recordings", "schedule": 60.0},
    "prune-outbox": {"task": "bitrixapp.tasks.prune", "schedule": 3600.0},
    # Lost delivery reports, messages past their lifetime, send tasks lost with the broker.
    "poll-sms-statuses": {"task": "sms.tasks.poll_statuses", "schedule": 60.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# A stored inbound request still waiting this long after it was due has lost its queue message
# (a crash, a Redis loss): the sweeper queues it again.
INBOX_STUCK_AFTER_S = env.int("INBOX_STUCK_AFTER_S", default=60)
# Done commands and processed events are kept this long for the admin timeline.
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=30)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский")]
# The compiled catalogues (.mo) are committed next to the .po sources: `make run` on a fresh
# machine needs no gettext tools.
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Served by WhiteNoise. Without DEBUG the hashed (manifest) names need `collectstatic`: the
# Docker image runs it at build time, `manage.py serve` (make run) at every start.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "bitrixapp.http.json_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# The OpenAPI schema of the inbound endpoints: GET /api/schema/, browsable at /api/docs/.
SPECTACULAR_SETTINGS = {
    "TITLE": "Bitrix24 telephony & SMS bridge",
    "DESCRIPTION": "The endpoints Bitrix24 and the PBXs call. Every error is JSON: "
    '{"error": code, "detail": words, "field": the wrong field when there is one}.',
    "VERSION": APP_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Bitrix24 shows the app pages in an iframe on the portal's own domain: those pages are exempt
# and send CSP frame-ancestors naming the portal instead (bitrixapp.app_page).
X_FRAME_OPTIONS = "DENY"
# The one-time link from the app page into the admin: seconds it stays valid.
ADMIN_LOGIN_LINK_TTL_S = env.int("ADMIN_LOGIN_LINK_TTL_S", default=120)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PUBLIC_HTTPS)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = PUBLIC_HTTPS
    CSRF_COOKIE_SECURE = PUBLIC_HTTPS
    # Inside the Bitrix24 iframe the admin session cookie is a third-party cookie; browsers
    # accept SameSite=None only on secure cookies.
    SESSION_COOKIE_SAMESITE = "None" if PUBLIC_HTTPS else "Lax"
    CSRF_COOKIE_SAMESITE = "None" if PUBLIC_HTTPS else "Lax"
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if PUBLIC_HTTPS else 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Webhook URLs are secrets: Django logs the path of every refused request (logsafe).
    "filters": {"mask_secrets": {"()": "bitrixapp.logsafe.MaskSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["mask_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # urllib3 logs request lines at DEBUG: the OAuth refresh URL carries the client secret.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
