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
    "auditlog",
    "cases",
    "inference",
    "verification",
    "intake",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "octportal.errors.DomainErrorMiddleware",
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "cases:home"
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

# Upload limits (bytes / pixels / files per batch).
OCT_UPLOAD_MAX_BYTES = env.int("OCT_UPLOAD_MAX_BYTES", default=25 * 1024 * 1024)
OCT_UPLOAD_MAX_PIXELS = env.int("OCT_UPLOAD_MAX_PIXELS", default=40_000_000)
OCT_UPLOAD_MAX_FILES = env.int("OCT_UPLOAD_MAX_FILES", default=100)
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
# A scan queued or running longer than this is re-enqueued by the periodic sweep.
OCT_INFERENCE_STALE_AFTER = timedelta(seconds=env.int("OCT_INFERENCE_STALE_AFTER_S", default=300))
# Claims of one scan that never finished before the sweep marks it failed.
OCT_INFERENCE_MAX_ATTEMPTS = max(1, env.int("OCT_INFERENCE_MAX_ATTEMPTS", default=3))
OCT_DATA_DIR = env.path("OCT_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "oct"))

# Volumes (docs/volumes.md): limits of one volume upload, the device-format fixtures.
OCT_VOLUME_MAX_BYTES = env.int("OCT_VOLUME_MAX_BYTES", default=400 * 1024 * 1024)
OCT_VOLUME_MAX_SLICES = env.int("OCT_VOLUME_MAX_SLICES", default=512)
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
OCT_EYE_URGENT_MIN_P = env.float("OCT_EYE_URGENT_MIN_P", default=0.5)

# Tiered verification.
VERIFICATION_REQUIRED_GRADES = max(1, env.int("VERIFICATION_REQUIRED_GRADES", default=2))
# Reading-centre mode hides the current label and the model from tier 2 until they grade.
VERIFICATION_READING_CENTRE_MODE = env.bool("VERIFICATION_READING_CENTRE_MODE", default=False)
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
# Redis redelivers an unacknowledged message after this; longer than any task.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600)}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-scans": {
        "task": "inference.tasks.sweep_stale_scans",
        "schedule": env.int("OCT_SWEEP_INTERVAL_S", default=60),
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "octportal.errors.api_exception_handler",
}

AUDITLOG_INCLUDE_ALL_MODELS = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
}
