"""Pantheon settings. Every value comes from the environment (or `.env`)."""

import re
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# manage.py commands that serve nothing and sign nothing that outlives them; they may run
# without a SECRET_KEY (a newcomer's `makemigrations`, a schema-only `migrate`).
KEYLESS_COMMANDS = frozenset(
    {"makemigrations", "migrate", "showmigrations", "sqlmigrate", "createcachetable", "reconcile_wallets"}
)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "dev-insecure-only-for-debug"  # noqa: S105 - DEBUG only
    elif Path(sys.argv[0]).name == "manage.py" and sys.argv[1:2] and sys.argv[1] in KEYLESS_COMMANDS:
        SECRET_KEY = get_random_secret_key()  # throwaway: nothing signed with it is kept
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment or .env "
            "(or DEBUG=true for a local development server)."
        )
# Rotation: the previous key(s), comma-separated, still verify sessions and signed cursors
# while everything new is signed with SECRET_KEY (docs/deploy.md, "Rotating keys").
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "accounts",
    "billing",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outermost but one: every response gets the policy, also those a later middleware answers.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "pantheon.middleware.RejectNulInURLMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pantheon.urls"
WSGI_APPLICATION = "pantheon.wsgi.application"
ASGI_APPLICATION = "pantheon.asgi.application"

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
                "billing.context_processors.header_wallet",
            ],
        },
    },
]

# Database: unset DATABASE_URL means the zero-setup SQLite file for `make run`.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's native psycopg 3 pool; CONN_MAX_AGE must stay 0 with a pool.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool tests a connection before lending it (one empty round trip): after a
    # database restart or failover a dead parked connection is replaced, not given
    # to a request that would then answer 500.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_HEALTH_CHECKS", default=True)
    if env.bool("DATABASE_POOL", default=True):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=4),
            "timeout": env.int("DATABASE_POOL_TIMEOUT", default=10),
        }

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/rooms/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("MEDIA_ROOT", default="") or BASE_DIR / "media")
MEDIA_URL = "/media/"
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = True
# Uploads go to S3 (django-storages, one boto3 connection per process) when a bucket is set.
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "chat.storage.SharedConnectionS3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env("AWS_S3_REGION_NAME", default="") or None,
            "access_key": env("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env("AWS_SECRET_ACCESS_KEY", default="") or None,
            # Upload names carry a random directory: no existence check (HEAD) needed.
            "file_overwrite": True,
            "default_acl": None,
        },
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Django REST framework -------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        # Bounded nesting, no lone surrogates or NUL characters (pantheon/parsers.py).
        "pantheon.parsers.SafeJSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "EXCEPTION_HANDLER": "pantheon.api.exception_handler",
    "DEFAULT_METADATA_CLASS": "pantheon.api.APIMetadata",
    # Views with a `throttle_scope` are rate limited (THROTTLE_RATES below); the others are not.
    "DEFAULT_THROTTLE_CLASSES": ["pantheon.throttling.ScopedRateThrottle"],
    # Proxies in front of the app: the client address is the entry this far from the right of
    # X-Forwarded-For. 0 (the default) means REMOTE_ADDR, so a client cannot forge its address.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pantheon API",
    "DESCRIPTION": "Multi-model chat with metered, prepaid credits.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI is served from our own static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several components have a `status` field with its own set of values; name each set.
    "ENUM_NAME_OVERRIDES": {
        "TurnStatusEnum": ["completed", "cancelled", "failed"],
        "RoutedByEnum": ["single", "explicit", "mention", "manager", "fallback"],
        "ToolCallStatusEnum": ["ok", "error"],
        "TurnCancelStatusEnum": ["cancelling"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "pantheon.api.document_api_conventions",
    ],
}
# Tokens are stored hashed by knox; they expire and logout revokes them.
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Bearer",
    "TOKEN_TTL": timedelta(hours=env.int("TOKEN_TTL_HOURS", default=24 * 7)),
    "AUTO_REFRESH": False,
}

# Requests per client (the user, or the address when signed out) per period, counted in Redis
# (REDIS_URL) or in a database table, so every worker and host shares one limit (pantheon/throttling.py);
# empty turns a scope off.
THROTTLE_RATES = {
    "signup": env("THROTTLE_SIGNUP_RATE", default="10/hour"),
    "token": env("THROTTLE_TOKEN_RATE", default="20/minute"),
    "turn": env("THROTTLE_TURN_RATE", default="30/minute"),
    "upload": env("THROTTLE_UPLOAD_RATE", default="60/hour"),
}
for _scope, _rate in THROTTLE_RATES.items():
    if _rate and not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", _rate):
        raise ImproperlyConfigured(
            f"THROTTLE_{_scope.upper()}_RATE={_rate!r}: use <count>/<second|minute|hour|day>, e.g. 20/minute."
        )

# /healthz answers status only; /healthz/detail (process ids, pricing cache, pending migrations,
# the database error) is for staff sessions or `Authorization: Bearer <HEALTHZ_TOKEN>` (empty: staff only).
HEALTHZ_TOKEN = env("HEALTHZ_TOKEN", default="")

# --- Billing -------------------------------------------------------------------
ADMIN_USER_IDS = [int(i) for i in env.list("ADMIN_USER_IDS", default=[])]
BETA_GRANT_CREDITS = Decimal(env("BETA_GRANT_CREDITS", default="500"))
CREDITS_PER_1K_TOKENS = Decimal(env("CREDITS_PER_1K_TOKENS", default="1"))
CREDIT_ENFORCEMENT = env("CREDIT_ENFORCEMENT", default="observe")
if CREDIT_ENFORCEMENT not in ("observe", "enforce"):
    raise ImproperlyConfigured("CREDIT_ENFORCEMENT must be 'observe' or 'enforce'.")
if CREDIT_ENFORCEMENT == "enforce" and "postgresql" not in DATABASES["default"]["ENGINE"]:
    # Credit holds are placed and settled by single PostgreSQL statements (billing.services.holds).
    raise ImproperlyConfigured("CREDIT_ENFORCEMENT=enforce needs PostgreSQL (DATABASE_URL=postgres://…).")
ALLOW_SIGNUP = env.bool("ALLOW_SIGNUP", default=True)
# Seconds between the safety-net checks that the multiplier cache is current.
PRICING_VERSION_CHECK_SECONDS = env.float("PRICING_VERSION_CHECK_SECONDS", default=5.0)
# Every page shows a banner while the wallet's available credits are under this.
LOW_BALANCE_CREDITS = Decimal(env("LOW_BALANCE_CREDITS", default="50"))
# The per-process LISTEN/NOTIFY thread (PostgreSQL only) started by pantheon/wsgi.py.
PRICING_LISTENER_ENABLED = env.bool("PRICING_LISTENER_ENABLED", default=True)

# --- Providers and tools -----------------------------------------------------
TAVILY_API_KEY = env("TAVILY_API_KEY", default="")
TAVILY_BASE_URL = env("TAVILY_BASE_URL", default="https://api.tavily.com")
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
ANTHROPIC_API_KEY = env("ANTHROPIC_API_KEY", default="")
GOOGLE_API_KEY = env("GOOGLE_API_KEY", default="")
DEEPSEEK_API_KEY = env("DEEPSEEK_API_KEY", default="")
LLM_TIMEOUT_SECONDS = env.float("LLM_TIMEOUT_SECONDS", default=60.0)
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=1)

# --- Chat ---------------------------------------------------------------------
# Model alias → (LangChain provider, provider model). An alias calls its provider
# only when that provider's key is set; otherwise the built-in offline model answers.
CHAT_MODEL_ALIASES = {
    "gpt-4o": ("openai", "gpt-4o"),
    "gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "claude-sonnet": ("anthropic", "claude-sonnet-4-5"),
    "claude-haiku": ("anthropic", "claude-haiku-4-5"),
    "gemini-pro": ("google_genai", "gemini-2.5-pro"),
    "gemini-flash": ("google_genai", "gemini-2.5-flash"),
    "deepseek": ("deepseek", "deepseek-chat"),
    "default": ("openai", "gpt-4o-mini"),
}
# The alias whose (unmetered) call routes a turn in a multi-agent room.
CHAT_MANAGER_ALIAS = env("CHAT_MANAGER_ALIAS", default="default")
# Who answers an unnamed turn when the manager's routing reply cannot be read: the room's
# first agent (`first`, the cheap default) or every agent (`all`).
CHAT_ROUTING_FALLBACK = env("CHAT_ROUTING_FALLBACK", default="first")
if CHAT_ROUTING_FALLBACK not in ("first", "all"):
    raise ImproperlyConfigured("CHAT_ROUTING_FALLBACK must be `first` or `all`.")
MAX_AGENTS_PER_ROOM = env.int("MAX_AGENTS_PER_ROOM", default=5)
TURN_MAX_CONTENT_CHARS = env.int("TURN_MAX_CONTENT_CHARS", default=8000)
TURN_MAX_FILES = env.int("TURN_MAX_FILES", default=5)
# Model calls per agent per turn (tool rounds included); bounds a runaway tool loop.
CHAT_MAX_AGENT_STEPS = env.int("CHAT_MAX_AGENT_STEPS", default=4)
# Stop: how often a running turn checks its key row for a Stop sent to another process, and how long
# it then waits for its agents' last chunks before committing what ran.
TURN_CANCEL_POLL_SECONDS = env.float("TURN_CANCEL_POLL_SECONDS", default=0.5)
TURN_CANCEL_GRACE_SECONDS = env.float("TURN_CANCEL_GRACE_SECONDS", default=0.5)
# How many turns of one process do their CPU work (checks, hold, prompt, commit) at once; the others
# wait without using the interpreter, so short requests (a wallet, a page) are not queued behind all of
# them (pantheon/bulkhead.py). The model calls themselves are not counted. 0 = no limit.
TURN_CPU_SLOTS = env.int("TURN_CPU_SLOTS", default=1)
# Streamed turns send an SSE comment this often while nothing else happens (proxies keep the
# stream open, and a client that went away is noticed).
TURN_STREAM_HEARTBEAT_SECONDS = env.float("TURN_STREAM_HEARTBEAT_SECONDS", default=1.0)
# Earlier turns given to the agents as context (one query, whatever the room's length).
CHAT_HISTORY_TURNS = env.int("CHAT_HISTORY_TURNS", default=10)
# Every provider call is made with max_tokens = this, so a turn's hold (and its quote's high end)
# is a true upper bound of its cost.
CREDIT_HOLD_OUTPUT_TOKENS = env.int("CREDIT_HOLD_OUTPUT_TOKENS", default=1000)
# The quote's low end assumes no tool rounds and an answer of this many tokens (a typical chat reply).
CREDIT_QUOTE_TYPICAL_OUTPUT_TOKENS = env.int("CREDIT_QUOTE_TYPICAL_OUTPUT_TOKENS", default=300)
# An active hold whose worker died is released after this many seconds (longer than any turn:
# GUNICORN_TIMEOUT is 180).
HOLD_LEASE_SECONDS = env.int("HOLD_LEASE_SECONDS", default=300)
# Tool results a model may read per tool round, in tokens of its tokenizer, on top of the
# attached files' text (web search results, files read by id); over it a result is cut.
CHAT_TOOL_RESULT_TOKENS = env.int("CHAT_TOOL_RESULT_TOKENS", default=4000)
# Tool calls run per agent step; a reply asking for more runs only the first ones.
CHAT_MAX_TOOL_CALLS_PER_STEP = env.int("CHAT_MAX_TOOL_CALLS_PER_STEP", default=8)
# Idempotency-Key: a reservation whose worker died is taken over after the lease;
# a duplicate waits this long for the first request before answering 409.
IDEMPOTENCY_LEASE_SECONDS = env.int("IDEMPOTENCY_LEASE_SECONDS", default=300)
IDEMPOTENCY_WAIT_SECONDS = env.float("IDEMPOTENCY_WAIT_SECONDS", default=30.0)
IDEMPOTENCY_KEY_TTL_HOURS = max(24, env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=48))
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=10 * 1024 * 1024)
# Bytes of uploads one user may keep (413 `quota_exceeded` above it, nothing stored); 0 = no quota.
UPLOAD_QUOTA_BYTES = env.int("UPLOAD_QUOTA_BYTES", default=100 * 1024 * 1024)
UPLOAD_ALLOWED_CONTENT_TYPES = env.list(
    "UPLOAD_ALLOWED_CONTENT_TYPES",
    default=["text/plain", "text/csv", "text/markdown", "application/json", "application/pdf"],
)
# Characters of a file handed to a model by file_read / file_parse.
FILE_READ_MAX_CHARS = env.int("FILE_READ_MAX_CHARS", default=20000)
# Text extraction at upload (chat.extraction). A PDF is parsed in a child process limited to
# this much CPU time (RLIMIT_CPU) and address space (RLIMIT_AS), killed at the same wall-clock
# time; over either it is stored as unreadable. Text beyond the page or character limit is cut.
FILE_PARSE_TIMEOUT_SECONDS = env.float("FILE_PARSE_TIMEOUT_SECONDS", default=5.0)
FILE_PARSE_MEMORY_BYTES = env.int("FILE_PARSE_MEMORY_BYTES", default=256 * 1024 * 1024)
FILE_PARSE_MAX_PAGES = env.int("FILE_PARSE_MAX_PAGES", default=200)
FILE_PARSE_MAX_CHARS = env.int("FILE_PARSE_MAX_CHARS", default=1_000_000)
WEB_SEARCH_MAX_RESULTS = env.int("WEB_SEARCH_MAX_RESULTS", default=5)

# --- Security (production) -----------------------------------------------------
# HTTPS-only cookies, HSTS and the SSL redirect are on whenever DEBUG is off;
# SECURE_HTTPS=false is for plain-HTTP test servers on 127.0.0.1 only.
SECURE_HTTPS = env.bool("SECURE_HTTPS", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = SECURE_HTTPS
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000) if SECURE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HTTPS
SECURE_HSTS_PRELOAD = SECURE_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (django-csp): scripts, styles, fonts and connections
# from this origin only; no inline script, no eval, no plugins, no framing. Templates keep
# JavaScript in static/js/ (tests/pages/test_csp.py loads every page in Chromium and fails on
# any violation). `data:` images are the Swagger UI's icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
SESSION_COOKIE_HTTPONLY = True
# Request bodies: JSON turns are small; uploads have their own limit in chat.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

# --- Cache (shared across workers and hosts: throttling state lives here) ------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # The table is created by a migration (accounts 0002), so it exists everywhere.
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "pantheon_cache"}
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # The provider clients' HTTP libraries log every request at INFO ("HTTP Request: POST …"):
    # a line per model call, in the burst of CPU every turn already is; the turn's own log line
    # says what ran. Their warnings and errors still show.
    "loggers": {name: {"level": "WARNING"} for name in ("httpx", "httpx2", "httpcore", "httpcore2")},
}
