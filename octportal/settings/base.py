"""Settings shared by every environment.

Zero configuration gives the embedded default: SQLite under ``var/``, Celery
tasks run in-process, the shipped ONNX model. Environment variables (see
``.env.example``) switch to PostgreSQL, Redis and separate Celery workers.
"""
from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import environ
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Development-only key; production.py refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-insecure-oct-portal-key-do-not-use-in-production")
# Off unless asked for: scripts/run (the embedded default) sets DJANGO_DEBUG=true.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "auditlog",
    "axes",
    "csp",
    "cases",
    "inference",
    "verification",
    "intake",
    "integrations",
]

MIDDLEWARE = [
    # First: probes get /healthz and /readyz without host checks, sessions or auth.
    "octportal.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "octportal.middleware.ResponseHeadersMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF: it parses form bodies first, so Django's upload limits get the app's message.
    "octportal.middleware.RequestGuardMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The trusted-proxy client address, not the left-most X-Forwarded-For (octportal.security).
    "octportal.middleware.AuditlogMiddleware",
    "octportal.errors.DomainErrorMiddleware",
    "octportal.middleware.ApiExceptionMiddleware",
    # Last: it must see the answer of the login view to count a failed sign-in.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "octportal.urls"
WSGI_APPLICATION = "octportal.wsgi.application"

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
                "cases.roles.roles_context",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A fresh clone has no var/ yet; SQLite creates the file but not its folder.
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Celery workers and the web server write concurrently: wait for the lock, and take
    # the write lock when a transaction begins so that two writers never deadlock on an
    # upgrade ("database is locked").
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
elif DATABASES["default"]["ENGINE"].endswith(("postgresql", "postgis")) and env.bool("OCT_PG_JIT_OFF", default=True):
    # No JIT compilation: the planner's cost estimate of a worklist query with per-row
    # subqueries (a volume worklist on an empty volume table) passes jit_above_cost, and
    # compiling took 780 ms for a query that ran in 0.05 ms (bench/pages.py at 1M scans).
    # Short OLTP queries gain nothing from it.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = f"{options.get('options', '')} -c jit=off".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env.int("OCT_PASSWORD_MIN_LENGTH", default=12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out account or address before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
# A clinic day by default; a shared workstation can also end the session with the browser.
SESSION_COOKIE_AGE = env.int("OCT_SESSION_AGE_S", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("OCT_SESSION_EXPIRE_AT_BROWSER_CLOSE", default=False)

# Addresses of the reverse proxies whose X-Forwarded-For is believed (IPs or CIDRs).
OCT_TRUSTED_PROXIES = env.list("OCT_TRUSTED_PROXIES", default=[])

# Sign-in lockout (django-axes): per account and, separately, per client address.
AXES_FAILURE_LIMIT = env.int("OCT_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("OCT_LOGIN_COOLOFF_S", default=15 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "octportal.security.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "octportal.security.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
# Failures only: a success row per sign-in would be a second, unreviewed access log.
AXES_DISABLE_ACCESS_LOG = True
LOGIN_REDIRECT_URL = "cases:start"  # each role's own start page (cases.views.start)
LOGOUT_REDIRECT_URL = "cases:home"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))

# Scan images are private: there is deliberately no MEDIA_URL route. They are
# served only by views that check permission (cases.views.scan_image).
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = None

# Scan images and heatmaps on local disk (MEDIA_ROOT) by default, or in an S3-compatible
# bucket when OCT_S3_BUCKET is set (every web and worker machine then shares it). The
# objects stay private: no public ACL, and any URL the backend makes is signed and
# short-lived; the app never hands one out (images go through the authenticated views).
OCT_S3_BUCKET = env("OCT_S3_BUCKET", default="")
if OCT_S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": OCT_S3_BUCKET,
            "endpoint_url": env("OCT_S3_ENDPOINT_URL", default="") or None,
            "region_name": env("OCT_S3_REGION", default="") or None,
            "location": env("OCT_S3_PREFIX", default=""),
            # Credentials from the environment only: OCT_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY,
            # else boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, an instance role).
            "access_key": env("OCT_S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env("OCT_S3_SECRET_ACCESS_KEY", default="") or None,
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": 300,
            # Never overwrite: two uploads with one name must stay two objects.
            "file_overwrite": False,
            "addressing_style": env("OCT_S3_ADDRESSING_STYLE", default="") or None,
            "signature_version": "s3v4",
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Upload limits (bytes / pixels / files per batch).
OCT_UPLOAD_MAX_BYTES = env.int("OCT_UPLOAD_MAX_BYTES", default=25 * 1024 * 1024)
OCT_UPLOAD_MAX_PIXELS = env.int("OCT_UPLOAD_MAX_PIXELS", default=40_000_000)
OCT_UPLOAD_MAX_FILES = env.int("OCT_UPLOAD_MAX_FILES", default=100)
# Keep the uploaded bytes beside the de-identified grey copy? They may carry names and
# dates in EXIF/XMP/text chunks, so only where the clinic needs them (never served to graders).
OCT_KEEP_UPLOADED_FILES = env.bool("OCT_KEEP_UPLOADED_FILES", default=False)
# Smallest width and height of a B-scan (a smaller image is a thumbnail or an icon).
OCT_UPLOAD_MIN_SIDE_PX = env.int("OCT_UPLOAD_MIN_SIDE_PX", default=128)
# Django refuses bodies larger than this before our validation runs; leave room for a batch.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=5 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = OCT_UPLOAD_MAX_FILES

# Inference (inference.runtime reads these).
OCT_MODEL_PATH = env("OCT_MODEL_PATH", default="")
OCT_ORT_INTRA_OP_THREADS = env.int("OCT_ORT_INTRA_OP_THREADS", default=1)
OCT_ORT_INTER_OP_THREADS = env.int("OCT_ORT_INTER_OP_THREADS", default=1)
# Threads one batch of scans is spread over (each preprocesses and runs its share).
OCT_BATCH_THREADS = env.int("OCT_BATCH_THREADS", default=1)
OCT_INFERENCE_BATCH_SIZE = max(1, env.int("OCT_INFERENCE_BATCH_SIZE", default=16))
# A scan queued or running longer than this is re-enqueued by the periodic sweep. With
# the sweep every OCT_SWEEP_INTERVAL_S this bounds the recovery of a scan whose worker
# died: at most stale + interval + one analysis (45 + 15 + a few s with the defaults;
# docs/deployment.md). A live batch refreshes its scans' claim every third of it
# (scans_heartbeat), so only a dead worker's scans grow stale.
OCT_INFERENCE_STALE_AFTER = timedelta(seconds=env.int("OCT_INFERENCE_STALE_AFTER_S", default=45))
# Claims of one scan that never finished before the sweep marks it failed.
OCT_INFERENCE_MAX_ATTEMPTS = max(1, env.int("OCT_INFERENCE_MAX_ATTEMPTS", default=3))
OCT_DATA_DIR = env.path("OCT_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "oct"))

# Volumes (docs/volumes.md): limits of one volume upload, the device-format fixtures.
OCT_VOLUME_MAX_BYTES = env.int("OCT_VOLUME_MAX_BYTES", default=400 * 1024 * 1024)
OCT_VOLUME_MAX_SLICES = env.int("OCT_VOLUME_MAX_SLICES", default=512)
# Threads a volume's B-scans are encoded as PNG on while it is imported (zlib and numpy
# release the GIL; the workers wait for the volume, so its upload may use the cores).
OCT_VOLUME_ENCODE_THREADS = max(1, env.int("OCT_VOLUME_ENCODE_THREADS", default=2))
OCT_FORMATS_DIR = env.path("OCT_FORMATS_DIR", default=str(BASE_DIR.parent / "shared" / "oct-formats"))
# Key of the HMAC that maps a device's patient id to the pseudonymous patient. Keep it
# stable: a new key sends a returning patient's next visit to a new patient record.
OCT_PATIENT_KEY = env("OCT_PATIENT_KEY", default="") or hashlib.sha256(
    ("oct-patient-key:" + SECRET_KEY).encode("utf-8")
).hexdigest()
# DICOM receiver (manage.py dicom_receiver): Storage SCP for Ophthalmic Tomography.
OCT_DICOM_AE_TITLE = env("OCT_DICOM_AE_TITLE", default="OCTPORTAL")
OCT_DICOM_PORT = env.int("OCT_DICOM_PORT", default=11112)
OCT_DICOM_BIND = env("OCT_DICOM_BIND", default="127.0.0.1")
# Calling AE titles allowed to send; empty refuses every association.
OCT_DICOM_ALLOWED_AE_TITLES = env.list("OCT_DICOM_ALLOWED_AE_TITLES", default=[])
# A series is complete when nothing of it arrived for this long (DICOM has no end marker).
OCT_DICOM_QUIET_S = env.float("OCT_DICOM_QUIET_S", default=10.0)
# Per-eye reading of a volume (inference/volume_reading.py): urgent when at least this many
# B-scans are urgent with at least this probability. Chosen on the validation split by
# training/evaluate_eyes.py (k=2 lost 2 of 26 urgent eyes there; docs/volumes.md).
OCT_EYE_URGENT_MIN_SLICES = env.int("OCT_EYE_URGENT_MIN_SLICES", default=1)
OCT_EYE_URGENT_MIN_P = env.float("OCT_EYE_URGENT_MIN_P", default=0.3)

# Tiered verification.
VERIFICATION_REQUIRED_GRADES = max(1, env.int("VERIFICATION_REQUIRED_GRADES", default=2))
# Reading-centre mode (the default) hides the current label and everything derived from
# the model from tier 2 until they grade: independent grading. False gives tier 2
# "confirm or correct" (they see the current label and the model's reading).
VERIFICATION_READING_CENTRE_MODE = env.bool("VERIFICATION_READING_CENTRE_MODE", default=True)
# Key of the keyed hash that pseudonymises patients in exports (falls back to SECRET_KEY).
VERIFICATION_EXPORT_KEY = env("VERIFICATION_EXPORT_KEY", default="")

# Celery: no broker configured means tasks run in-process (embedded default).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=120)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=90)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis redelivers an unacknowledged message after this; longer than any task plus its
# wait in a worker's prefetch, and longer than any retry countdown (else duplicates).
# Recovery from a dead worker does not wait for it: the sweep re-enqueues sooner.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600)}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# The sweep has a queue of its own: a worker consumes its queues in turn (Redis BRPOP
# on both, the one that just delivered moved last), so under a backlog of readings the
# next sweep waits for one task, not for the whole backlog. Every worker consumes both
# unless started with -Q; `-Q sweep` alone gives a small worker that only sweeps.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery", routing_key="celery"), Queue("sweep", routing_key="sweep"))
CELERY_TASK_ROUTES = {"inference.tasks.sweep_stale_scans": {"queue": "sweep"}}

# The statistics page shows a report at most this old; beat recomputes it before then,
# so that no page view waits for the aggregation over every grade (seconds at 1M scans).
VERIFICATION_STATISTICS_MAX_AGE_S = env.int("VERIFICATION_STATISTICS_MAX_AGE_S", default=300)

CELERY_BEAT_SCHEDULE = {
    "sweep-stale-scans": {
        "task": "inference.tasks.sweep_stale_scans",
        "schedule": env.int("OCT_SWEEP_INTERVAL_S", default=15),
    },
    "refresh-statistics": {
        "task": "verification.tasks.refresh_statistics",
        "schedule": max(30, VERIFICATION_STATISTICS_MAX_AGE_S // 2),
    },
}

# Health endpoints (octportal.health): seconds a broker connect or worker ping may take,
# and whether /readyz needs a worker to answer when a broker is configured.
OCT_HEALTH_TIMEOUT_S = env.float("OCT_HEALTH_TIMEOUT_S", default=2.0)
OCT_HEALTH_REQUIRE_WORKER = env.bool("OCT_HEALTH_REQUIRE_WORKER", default=True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        # Named, scoped, expiring tokens (integrations): "Authorization: Bearer oct_...".
        "integrations.authentication.ApiTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    # /api/v1/ (URL namespace v1) and the unversioned /api/ aliases (octportal.api).
    "DEFAULT_VERSIONING_CLASS": "octportal.versioning.ApiVersioning",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "octportal.errors.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "octportal.parsers.JSONObjectParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "octportal.throttling.ClientAnonRateThrottle",
        "octportal.throttling.ClientUserRateThrottle",
        "octportal.throttling.TokenRateThrottle",
        "octportal.throttling.ClientScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("OCT_API_RATE_ANON", default="30/min"),
        "user": env("OCT_API_RATE_USER", default="600/min"),
        "token": env("OCT_API_RATE_TOKEN", default="600/min"),
        "upload": env("OCT_API_RATE_UPLOAD", default="60/min"),
    },
}

# The longest an API token may last (integrations.services.token_create).
OCT_API_TOKEN_MAX_DAYS = env.int("OCT_API_TOKEN_MAX_DAYS", default=365)

# The OpenAPI schema of /api/v1/ (octportal.api_docs; committed as docs/openapi.yaml).
SPECTACULAR_SETTINGS = {
    "TITLE": "OCT Portal API",
    "DESCRIPTION": (
        "Retinal OCT records, automated readings and tiered verification. Authenticate with a "
        "session or an API token (`Authorization: Bearer oct_...`, from your account page). Every refusal is "
        '`{"detail": ..., "errors": {...}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "PREPROCESSING_HOOKS": ["octportal.api_docs.only_v1"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Throttle counters; one process keeps its own unless CACHE_URL names a shared cache (Redis).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

AUDITLOG_INCLUDE_ALL_MODELS = False

# Security headers (production.py adds HSTS, SSL redirect and secure cookies).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and style sheets from this site only, no
# inline <script> or <style>. Style *attributes* stay allowed: templates set bar widths
# and shares with them (style="--share: .42"); they cannot run script.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-elem": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Query strings can carry patient identifiers (a search): every handler redacts them.
    "filters": {"redact_query_strings": {"()": "octportal.logging.RedactQueryStrings"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_query_strings"]},
    },
    "loggers": {
        # Django's own handlers (console when DEBUG, mail_admins, the development server's
        # access log) would bypass the filter: route its loggers to ours instead.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # WeasyPrint logs every rendering step at INFO.
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
}
