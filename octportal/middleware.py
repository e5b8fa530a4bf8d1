"""Request guards and response headers that every page and API answer gets.

* ``AuditlogMiddleware``: django-auditlog with the trusted-proxy client address
  (``octportal.security.client_ip``) instead of the left-most ``X-Forwarded-For``.
* ``RequestGuardMiddleware``: refuse NUL bytes in query parameters and answer a
  multipart body over Django's limits (too many files or fields, too large) with the
  app's own message, as ``{"detail": ...}`` under ``/api/`` and as a page elsewhere.
* ``ResponseHeadersMiddleware``: ``Permissions-Policy`` everywhere; ``Cache-Control:
  no-store`` on every answer to a signed-in user and every API answer (they carry
  patient data); a sandbox CSP on downloads.
* ``ApiExceptionMiddleware``: an unhandled exception under ``/api/`` answers
  ``{"detail": "Internal server error."}`` (500) without details, never an HTML page.
"""
from __future__ import annotations

import logging

from auditlog.middleware import AuditlogMiddleware as _BaseAuditlogMiddleware
from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render

from .security import client_ip

logger = logging.getLogger(__name__)

PERMISSIONS_POLICY = (
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), "
    "magnetometer=(), microphone=(), midi=(), payment=(), usb=(), xr-spatial-tracking=()"
)


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def error_response(request: HttpRequest, message: str, status: int) -> HttpResponse:
    """``{"detail": message}`` under /api/, the domain error page elsewhere."""
    if is_api(request):
        return JsonResponse({"detail": message}, status=status)
    return render(request, "errors/domain_error.html", {"message": message, "status": status}, status=status)


class AuditlogMiddleware(_BaseAuditlogMiddleware):
    """Record the client address by the trusted-proxy rule, and no client-chosen port."""

    @staticmethod
    def _get_remote_addr(request: HttpRequest) -> str | None:
        if settings.AUDITLOG_DISABLE_REMOTE_ADDR:
            return None
        return client_ip(request)

    @staticmethod
    def _get_remote_port(request: HttpRequest) -> int | None:
        return None


def _too_many_files_message() -> str:
    limit = settings.OCT_UPLOAD_MAX_FILES
    return f"Too many files in one upload (more than {limit}); the limit is {limit}. Upload them in smaller batches."


class RequestGuardMiddleware:
    """Refuse malformed input before a view sees it (see the module docstring)."""

    _FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.META.get("QUERY_STRING", "") or any(
            "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
        ):
            return error_response(request, "Query parameters must not contain NUL characters.", 400)
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view, args, kwargs) -> HttpResponse | None:
        # Parse form bodies here, before CSRF and DRF do, so that Django's limits get our message.
        if request.method not in ("POST", "PUT", "PATCH"):
            return None
        if not request.content_type.startswith(self._FORM_TYPES):
            return None
        try:
            request.POST  # noqa: B018 - parses and caches POST and FILES
            request.FILES  # noqa: B018
        except TooManyFilesSent:
            return error_response(request, _too_many_files_message(), 400)
        except TooManyFieldsSent:
            return error_response(request, "Too many form fields in one request.", 400)
        except RequestDataTooBig:
            return error_response(request, "The request body is too large.", 413)
        except (MultiPartParserError, SuspiciousOperation, UnicodeDecodeError, ValueError):
            return error_response(request, "The request body could not be read as a form.", 400)
        return None


class ResponseHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        if is_api(request) or (user is not None and user.is_authenticated):
            if "no-store" not in response.get("Cache-Control", ""):
                response["Cache-Control"] = "private, no-store"
        if response.get("Content-Disposition", "").startswith("attachment"):
            # A downloaded original is the uploader's bytes: never let a browser run them as a page.
            response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response


class ApiExceptionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api(request) or isinstance(exception, (Http404, PermissionDenied, SuspiciousOperation)):
            return None  # the JSON handlers of octportal.error_views answer these
        if isinstance(exception, DataError):
            # A filter value the database cannot hold (a date in year 137 at UTC-16:19, a
            # number beyond its integers): the request is wrong, not the server.
            return JsonResponse({"detail": "A value in the request is outside what the database can store."}, status=400)
        # The path only: the query string may carry a patient identifier.
        logger.error("Unhandled exception on %s %s", request.method, request.path, exc_info=exception)
        return JsonResponse({"detail": "Internal server error."}, status=500)
