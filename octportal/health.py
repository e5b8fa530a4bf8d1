"""Liveness and readiness endpoints for load balancers, orchestrators and compose.

``/healthz`` (liveness): the process answers; touches nothing else, so a database
outage never makes an orchestrator restart every web process at once.

``/readyz`` (readiness): the dependencies a request or an analysis needs are there:
the database, the broker (when one is configured), the file storage, the model file
with the SHA-256 of the registered active model version, and at least one Celery
worker answering a ping (when a broker is configured). This module is the bottom layer
and knows no app: the model check is the inference app's (``inference.health``), which
registers it with :func:`register_check` when the app is ready.

Both are unauthenticated and answer JSON with 200 or 503. They reveal nothing
sensitive: check names and fixed short phrases only; exception texts (which can hold
host names, bucket names or credentials in URLs) go to the server log, never the
response. :class:`HealthCheckMiddleware` answers them before ``ALLOWED_HOSTS`` is
consulted, so a probe that connects by the container's IP still gets an answer.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from octportal.celery import app as celery_app

logger = logging.getLogger(__name__)

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"

# The name of the object whose existence the storage check asks about: a HEAD request on
# S3, a stat on local disk. It need not exist; the check is that the storage answers.
STORAGE_PROBE_NAME = "health/probe"


class CheckFailed(Exception):
    """A readiness check failed; ``public`` is the fixed phrase shown in the response."""

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


# --- checks ---------------------------------------------------------------------------


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _broker_configured() -> bool:
    return bool(settings.CELERY_BROKER_URL)


def check_broker() -> str:
    if not _broker_configured():
        return "not configured (tasks run in-process)"
    with celery_app.connection_for_write() as conn:
        _connect(conn)
    return "ok"


def _connect(conn: Any) -> None:
    # One attempt, no back-off: a probe must answer within its own timeout.
    conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=_timeout())


def check_storage() -> str:
    location = getattr(default_storage, "location", None)
    if location and not getattr(default_storage, "bucket_name", None):
        # Local disk: the folder must be there and writable by this process.
        path = Path(location)
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise CheckFailed("not writable")
    default_storage.exists(STORAGE_PROBE_NAME)
    return "ok"


def check_worker() -> str:
    if not _broker_configured():
        return "not configured (tasks run in-process)"
    if not settings.OCT_HEALTH_REQUIRE_WORKER:
        return "not required"
    with celery_app.connection_for_write() as conn:
        _connect(conn)  # a broker that is down fails here at once, not after the ping's retries
        # limit=1: return on the first reply instead of waiting out the whole timeout.
        replies = celery_app.control.ping(timeout=_timeout(), limit=1, connection=conn)
    if not replies:
        raise CheckFailed("no worker answered")
    return "ok"


def _timeout() -> float:
    return float(settings.OCT_HEALTH_TIMEOUT_S)


# name -> check: returns a short status phrase, or raises (CheckFailed for a public phrase).
READINESS_CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "worker": check_worker,
}


def register_check(name: str, check: Callable[[], str]) -> None:
    """Add a readiness check (an app's own, from its ``AppConfig.ready``)."""
    READINESS_CHECKS[name] = check


def run_checks(checks: dict[str, Callable[[], str]] | None = None) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Run every readiness check; return (all passed, per-check results without details)."""
    results: dict[str, dict[str, Any]] = {}
    healthy = True
    for name, check in (checks or READINESS_CHECKS).items():
        started = time.perf_counter()
        try:
            results[name] = {"ok": True, "status": check()}
        except CheckFailed as exc:
            healthy = False
            results[name] = {"ok": False, "status": exc.public}
            logger.warning("readiness check %s failed: %s", name, exc.public)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; details go to the log only
            healthy = False
            results[name] = {"ok": False, "status": "unavailable"}
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return healthy, results


# --- views ----------------------------------------------------------------------------


def _json(payload: dict[str, Any], status: int) -> HttpResponse:
    response = JsonResponse(payload, status=status, json_dumps_params={"sort_keys": True})
    # Answered before the header middleware runs: the two headers a JSON probe needs.
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process is up and answering. No database, no broker."""
    return _json({"status": "ok"}, 200)


def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: 200 when every dependency answers, otherwise 503 naming the failed ones."""
    healthy, results = run_checks()
    return _json({"status": "ok" if healthy else "unavailable", "checks": results}, 200 if healthy else 503)


class HealthCheckMiddleware:
    """Answer GET/HEAD on the health paths first, before host validation, sessions and
    auth: probes connect by IP, carry no cookies, and must not write a session."""

    ROUTES: ClassVar[dict[str, Callable[[HttpRequest], HttpResponse]]] = {HEALTHZ_PATH: healthz, READYZ_PATH: readyz}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self.ROUTES.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return _json({"detail": "Method not allowed."}, 405)
        response = view(request)
        if request.method == "HEAD":
            response.content = b""
        return response


def main() -> int:
    """``python -m octportal.health [--ready]``: exit 0 when the local web server's
    endpoint answers 200 (compose health checks: the slim image has no curl)."""
    path = READYZ_PATH if "--ready" in sys.argv[1:] else HEALTHZ_PATH
    port = os.environ.get("OCT_HEALTH_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            body = json.loads(resp.read() or b"{}")
            return 0 if resp.status == 200 and body.get("status") == "ok" else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
