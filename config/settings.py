"""Syncdesk settings: one module, read from the environment (README lists every variable).

The defaults are the embedded set-up of ``make demo``: a SQLite file and kombu's filesystem
broker under ``var/``, so nothing has to be installed. Production sets DATABASE_URL (PostgreSQL),
CELERY_BROKER_URL (Redis or RabbitMQ), SECRET_KEY, FIELD_ENCRYPTION_KEYS and ALLOWED_HOSTS.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_broker_url,
    env_database,
    env_int,
    env_list,
    env_secret,
    env_str,
    local_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SYNCDESK_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# Secrets the environment did not set and that were generated into var/ (a deploy check warns).
GENERATED_SECRETS: list[str] = []
SECRET_KEY = env_secret("SECRET_KEY") or ""
if not SECRET_KEY:
    SECRET_KEY = local_secret(VAR_DIR / "secret_key")
    GENERATED_SECRETS.append("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Credentials at rest: Fernet keys, newest first. Older keys still decrypt, so a key is rotated by
# putting a new one in front and running `manage.py rotate_encryption_keys`.
_keys = env_secret("FIELD_ENCRYPTION_KEYS")
if _keys:
    FIELD_ENCRYPTION_KEYS = [k.strip() for k in _keys.split(",")]
else:
    FIELD_ENCRYPTION_KEYS = [
        local_secret(VAR_DIR / "field_encryption_key", lambda: Fernet.generate_key().decode())
    ]
    GENERATED_SECRETS.append("FIELD_ENCRYPTION_KEYS")
for _key in FIELD_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tables2",
    "django_celery_beat",
    "template_partials",
    "accounts",
    "connectors",
    "monitoring",
    "exceptions_inbox",
    "outbound",
    "ninja",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "accounts.context_processors.workspaces",
            ],
        },
    },
]

DATABASES = {
    "default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'syncdesk.sqlite3'}"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Security. Production sits behind TLS: SECURE_SSL_REDIRECT etc. are on unless DEBUG, and the proxy
# header is trusted only when SECURE_PROXY_SSL_HEADER is asked for.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# E-mail: to the console unless an SMTP host is configured.
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Syncdesk <syncdesk@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Celery. Messages only wake workers ("there is work"); the work itself is rows in the database,
# so a broker that loses its queue loses nothing (docs/architecture.md).
CELERY_BROKER_URL = env_broker_url("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # Workers look for messages this often (seconds): every hop of a realtime event waits up
        # to this long for its wake-up, and a look is one directory listing.
        "polling_interval": 0.05,
    }
    # The filesystem transport has no fanout exchange for remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
    # Any process may send the first message (migrate, seed, web): the folders must exist.
    for _folder in ("queue", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = "bulk"
# One beat at a time: DatabaseScheduler behind a lock; a second beat stays on standby (config/beat.py).
CELERY_BEAT_SCHEDULER = "config.beat:SingleBeatScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = False

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s"},
    },
    # No credential in a log line: webhook tokens in paths are replaced (config/log_filters.py).
    "filters": {"redact_tokens": {"()": "config.log_filters.RedactWebhookTokens"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_tokens"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
        "django.request": {"filters": ["redact_tokens"]},
    },
}

# The shared rate budget (DotDigital's tiers, Brightpearl's 200/min) lives in the database unless a
# Redis URL is given here, where it is kept with atomic scripts (faster under many workers).
RATE_BUDGET_REDIS_URL = env_str("RATE_BUDGET_REDIS_URL", "")
if RATE_BUDGET_REDIS_URL and not RATE_BUDGET_REDIS_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured("RATE_BUDGET_REDIS_URL must be a redis:// URL")

# Requests per minute each API key may make (shared by every process, like the rate budget).
API_RATE_PER_MINUTE = env_int("API_RATE_PER_MINUTE", 600, minimum=1)

# /metrics is read by Prometheus with this bearer token; without one it answers 404.
METRICS_TOKEN = env_secret("METRICS_TOKEN") or ""

CELERY_BEAT_SCHEDULE = {
    f"heartbeat-{queue}": {
        "task": "monitoring.record_heartbeat",
        "schedule": 30.0,
        "args": [queue],
        "options": {"queue": queue, "expires": 25},
    }
    for queue in ("realtime", "bulk", "webhooks")
}
# The engine's sweeper: wakes staging and fetching for due rows a lost message forgot.
CELERY_BEAT_SCHEDULE["engine-sweep"] = {
    "task": "monitoring.sweep_engine",
    "schedule": 10.0,
    "options": {"queue": "realtime", "expires": 9},
}
# Monitoring: flow health against the alert rules every minute (and each flow's jobs registered).
CELERY_BEAT_SCHEDULE["watch-check-flows"] = {"task": "monitoring.check_flows", "schedule": 60.0, "options": {"queue": "bulk", "expires": 55}}  # fmt: skip
# Slack-compatible default for alert notices. Such URLs carry their own secret: a secret here.
ALERT_WEBHOOK_URL = env_secret("ALERT_WEBHOOK_URL") or ""
# The inbox: snoozes that are due and assignment mails every minute; team digests (once a day each).
CELERY_BEAT_SCHEDULE.update({f"inbox-{t}": {"task": f"exceptions_inbox.{t}", "schedule": s} for t, s in (("wake_snoozed_groups", 60.0), ("send_assignment_notices", 60.0), ("send_team_digests", 900.0))})  # fmt: skip
# Delivery to DotDigital: each lane's runner on its own queue; the sweeper wakes what is due.
CELERY_TASK_ROUTES = {
    "monitoring.deliver_realtime": {"queue": "realtime"},
    "monitoring.deliver_bulk": {"queue": "bulk"},
    "monitoring.sweep_delivery": {"queue": "realtime"},
    "monitoring.pull_suppressions": {"queue": "bulk"},
    "monitoring.expire_list_memberships": {"queue": "bulk"},
    "monitoring.enrol_programs": {"queue": "bulk"},
}
CELERY_BEAT_SCHEDULE.update({
    "delivery-sweep": {"task": "monitoring.sweep_delivery", "schedule": 2.0, "options": {"expires": 2}},
    "delivery-suppressions": {"task": "monitoring.pull_suppressions", "schedule": 300.0},
    "delivery-list-expiry": {"task": "monitoring.expire_list_memberships", "schedule": 600.0},
    "delivery-enrolments": {"task": "monitoring.enrol_programs", "schedule": 200.0},
})  # fmt: skip
# Outbound webhooks on a queue of their own (`-Q webhooks`): a receiver that hangs holds a webhook
# worker for its timeout, never an engine lane. Beat re-wakes the sender for retries that fall due.
CELERY_TASK_ROUTES.update({f"outbound.{t}": {"queue": "webhooks"} for t in ("deliver_webhooks", "prune_webhook_log")})  # fmt: skip
CELERY_BEAT_SCHEDULE.update({"webhooks-send": {"task": "outbound.deliver_webhooks", "schedule": 10.0, "options": {"expires": 9}}, "webhooks-prune": {"task": "outbound.prune_webhook_log", "schedule": 3600.0}})  # fmt: skip
# Retention (monitoring/retention.py): payloads (webhook bodies, event envelopes, notification
# payloads) are redacted this many days after they arrived, hourly, once their work is settled.
# One period for every workspace and flow.
PAYLOAD_RETENTION_DAYS = env_int("PAYLOAD_RETENTION_DAYS", 30, minimum=1)
CELERY_BEAT_SCHEDULE["retention-sweep"] = {
    "task": "monitoring.sweep_retention",
    "schedule": 3600.0,
    "options": {"queue": "bulk", "expires": 3000},
}

# Links in mail (assignments, digests) are absolute only when the site's URL is known.
SYNCDESK_SITE_URL = env_str("SYNCDESK_SITE_URL", "")
# Each team's daily inbox digest goes out at this hour in the workspace's time zone.
INBOX_DIGEST_HOUR = env_int("INBOX_DIGEST_HOUR", 7, minimum=0)
if INBOX_DIGEST_HOUR > 23:
    raise ImproperlyConfigured("INBOX_DIGEST_HOUR must be an hour, 0 to 23")
# A fix's suggestion at least this close (0-100) is applied in one click; a less close one is
# shown, with its closeness, for a person to type in if it is right.
INBOX_ONE_CLICK_CLOSENESS = env_int("INBOX_ONE_CLICK_CLOSENESS", 90, minimum=0)
if INBOX_ONE_CLICK_CLOSENESS > 100:
    raise ImproperlyConfigured("INBOX_ONE_CLICK_CLOSENESS must be 0 to 100")
