"""One domain exception type and the two places that turn it into a response.

Services raise ``DomainError`` (or a subclass) with a message meant for people;
``DomainErrorMiddleware`` renders it for HTML views and ``api_exception_handler``
serialises it as ``{"detail": ...}`` for the API, each with the right status code.
"""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A request that the domain refuses; ``message`` is shown to the user."""

    status_code = 400

    def __init__(self, message: str, *, errors: dict[str, Any] | list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Conflict(DomainError):
    status_code = 409


class DomainErrorMiddleware:
    """Render a DomainError raised by an HTML view as a clear error page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DomainError):
            return None
        return render(
            request,
            "errors/domain_error.html",
            {"message": exception.message, "errors": exception.errors, "status": exception.status_code},
            status=exception.status_code,
        )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF handler: DomainError -> {"detail": message, "errors": ...}; field errors gain a "detail"."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": exc.message}
        if exc.errors:
            body["errors"] = exc.errors
        return Response(body, status=exc.status_code)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, ValidationError):
        response.data = _validation_body(response.data)
    return response


def _first_message(value: Any) -> str:
    if isinstance(value, dict):
        if "message" in value and isinstance(value["message"], str):  # Django form get_json_data()
            return value["message"]
        for key, item in value.items():
            text = _first_message(item)
            if text:
                return text if key in ("detail", "non_field_errors", "__all__") else f"{key}: {text}"
        return ""
    if isinstance(value, (list, tuple)):
        return next((t for t in (_first_message(v) for v in value) if t), "")
    return str(value)


def validation_summary(errors: Any) -> str:
    """The first field error as a sentence for people, e.g. ``birth_year: A valid integer is required.``"""
    return _first_message(errors) or "Invalid request."


def _validation_body(data: Any) -> dict[str, Any]:
    """The one API dialect for invalid input too: ``{"detail": summary, "errors": {field: [...]}}``."""
    return {"detail": validation_summary(data), "errors": data}
