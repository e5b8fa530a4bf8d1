"""What every app's REST API shares: input validation that refuses in the one dialect.

An invalid body is a ``DomainError`` like any other refusal, so every API error is
``{"detail": ..., "errors": {...}}`` with a 4xx status (see ``octportal.errors``).
"""
from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .errors import DomainError, validation_summary


def validated(input_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """Validate ``data`` with an ``*Input`` serializer; return its validated data or refuse."""
    if not isinstance(data, dict) and not hasattr(data, "getlist"):
        raise DomainError("The request body must be a JSON object or a form.")
    serializer = input_class(data=data)
    if not serializer.is_valid():
        errors = {name: [str(m) for m in msgs] if isinstance(msgs, list) else msgs for name, msgs in serializer.errors.items()}
        raise DomainError(validation_summary(errors), errors=errors)
    return dict(serializer.validated_data)
