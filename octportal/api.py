"""What every app's REST API shares: input validation that refuses in the one dialect.

An invalid body is a ``DomainError`` like any other refusal, so every API error is
``{"detail": ..., "errors": {...}}`` with a 4xx status (see ``octportal.errors``).
"""
from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

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


# The API's endpoints, listed by the root (``GET /api/``): (name, URL name, example
# arguments, what it does). ``{id}`` stands for a record's id.
API_ENDPOINTS: tuple[tuple[str, str, tuple[Any, ...], str], ...] = (
    ("patients", "cases-api:patient_list", (), "list (search ?q=) and register patients"),
    ("patient", "cases-api:patient_detail", ("{id}",), "one patient: read, update"),
    ("cases", "cases-api:case_list", (), "list and create examinations"),
    ("case", "cases-api:case_detail", ("{id}",), "one examination: read, update"),
    ("case_scan_upload", "cases-api:case_scan_upload", ("{id}",), "upload B-scans to an examination (multipart)"),
    ("scans", "cases-api:scan_list", (), "list scans"),
    ("scan", "cases-api:scan_detail", ("{id}",), "one scan with its status"),
    ("scan_prediction", "inference-api:scan_prediction", ("{id}",), "the scan's current automated reading"),
    ("scan_rerun", "inference-api:scan_rerun", ("{id}",), "queue the scan again for the active model (POST)"),
    ("model_versions", "inference-api:model_version_list", (), "model versions, the active one first"),
    ("worklist", "verification-api:worklist", ("{tier}",), "the signed-in grader's worklist of a tier (1, 2, 3)"),
    ("review", "verification-api:review", ("{id}",), "a scan's verification state, blinded for the user"),
    ("grade_submit", "verification-api:grade_submit", ("{id}",), "submit a grade for a scan (POST)"),
)


def _path(name: str, args: tuple[Any, ...]) -> str:
    # Reverse with a placeholder number, then put the readable placeholder back.
    numbers = [str(900000001 + i) for i in range(len(args))]
    url = reverse(name, args=numbers)
    for number, placeholder in zip(numbers, args):
        url = url.replace(number, placeholder)
    return url


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def api_root(request: Request) -> Response:
    """``GET /api/``: every endpoint of the API with what it does (signed-in users)."""
    return Response(
        {
            "detail": "OCT Portal REST API. Session or token authentication; errors are {\"detail\": ...}.",
            "endpoints": [
                {"name": name, "url": _path(url_name, args), "description": description}
                for name, url_name, args, description in API_ENDPOINTS
            ],
        }
    )
