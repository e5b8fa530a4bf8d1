"""What every app's REST API shares: input validation that refuses in the one dialect.

An invalid body is a ``DomainError`` like any other refusal, so every API error is
``{"detail": ..., "errors": {...}}`` with a 4xx status (see ``octportal.errors``).
"""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django_filters import FilterSet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from .errors import DomainError, validation_summary
from .paging import CappedPaginator
from .versioning import API_VERSION

def api_reverse(name: str, *, request: Any = None, args: tuple[Any, ...] | list[Any] = ()) -> str:
    """The path of an API route in the caller's version (``v1:cases-api:...`` under /api/v1/)."""
    if request is not None and getattr(request, "version", None):
        name = f"{request.version}:{name}"
    return reverse(name, args=list(args))


class ErrorOutput(serializers.Serializer):
    """The one refusal dialect: a sentence for people and, for invalid input, the fields."""

    detail = serializers.CharField()
    errors = serializers.DictField(required=False, help_text="Field name -> messages, for invalid input.")


ERROR_MEANING = {
    400: "Invalid input, query parameter or filter.",
    401: "Bearer token missing its secret, unknown, expired or revoked (the detail says which).",
    403: "Not signed in (no credentials), a role that may not do this, or a read-only token writing.",
    404: "No such record, not one the caller may see, or a page or cursor that does not exist.",
    409: "The state of the record does not allow it (e.g. already graded).",
    413: "The request body or a file is too large.",
    429: "Too many requests: throttled per user, token or address (see Retry-After).",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented refusals of an endpoint; 400, 401, 403 and 429 can answer any request."""
    return {c: OpenApiResponse(ErrorOutput, description=ERROR_MEANING[c]) for c in sorted({400, 401, 403, 429, *codes})}


def page_of(item: type[serializers.Serializer], *, cursor: bool = False) -> type[serializers.Serializer]:
    """The schema of a page of ``item``: numbered (count) or by cursor (no count)."""
    fields: dict[str, Any] = {
        "next": serializers.CharField(allow_null=True),
        "previous": serializers.CharField(allow_null=True),
        "results": item(many=True),
    }
    if not cursor:
        fields = {"count": serializers.IntegerField(), **fields}
    name = f"{item.__name__.removesuffix('Output')}{'Cursor' if cursor else ''}PageOutput"
    return type(name, (serializers.Serializer,), fields)


PAGE_PARAMETERS = [OpenApiParameter("page", OpenApiTypes.INT, description="Page number (numbered pages).")]
CURSOR_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, description="Opaque cursor from `next` / `previous`."),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="Items per page (at most 200)."),
]


def filter_parameters(filterset_class: type[FilterSet]) -> list[OpenApiParameter]:
    """The query parameters of a FilterSet, for the schema (the view applies it with ``filtered``)."""
    params = []
    for name, f in filterset_class.base_filters.items():
        choices = None
        if name == "ordering":
            choices = [p for field in f.param_map for p in (field, f"-{field}")]
        elif getattr(f, "extra", {}).get("choices"):
            choices = [c[0] for c in f.extra["choices"]]
        kind = {"NumberFilter": OpenApiTypes.INT, "BooleanFilter": OpenApiTypes.BOOL, "DateFilter": OpenApiTypes.DATE,
                "IsoDateTimeFilter": OpenApiTypes.DATETIME}.get(type(f).__name__, OpenApiTypes.STR)
        params.append(OpenApiParameter(name, kind, enum=choices, description=str(f.label or name)))
    return params


def filtered(filterset_class: type[FilterSet], request: Request, qs: QuerySet) -> QuerySet:
    """Apply a django-filter ``FilterSet`` to a selector's queryset; refuse invalid filters."""
    filterset = filterset_class(request.query_params, queryset=qs, request=request)
    if not filterset.is_valid():
        errors = {name: [str(m) for m in msgs] for name, msgs in filterset.errors.items()}
        raise DomainError(validation_summary(errors), errors=errors)
    return filterset.qs


class FileContentNegotiation(BaseContentNegotiation):
    """For endpoints that answer a file (PDF, CSV) themselves: refusals are JSON whatever
    the client accepts (DRF's documented 'ignore the Accept header' negotiation)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return (renderers[0], renderers[0].media_type)


class QuerysetCursorPagination(CursorPagination):
    """Cursor pagination in the order the selector (or ``?ordering=``) gave the queryset,
    so that a worklist keeps its rule's order and long lists page without counting."""

    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"

    def get_ordering(self, request, queryset, view) -> tuple[str, ...]:
        order = tuple(str(f) for f in queryset.query.order_by if isinstance(f, str))
        if not order:
            return ("id",)
        return order if any(f.lstrip("-") in ("id", "pk") for f in order) else (*order, "id")


class CappedPageNumberPagination(PageNumberPagination):
    """Numbered pages of a long list (the unversioned aliases of the lists /api/v1/ pages by
    cursor: scans, worklists) whose ``count`` stops at ``CappedPaginator.cap``: past it,
    ``count`` is the cap and ``count_capped`` is true ("1,000 or more"), and ``next``
    still follows while rows remain. Counting every row would cost more than the page."""

    django_paginator_class = CappedPaginator

    def get_paginated_response(self, data: Any) -> Response:
        paginator = self.page.paginator
        return Response(
            {
                "count": min(paginator.count, paginator.cap),
                "count_capped": paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )


def validated(input_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """Validate ``data`` with an ``*Input`` serializer; return its validated data or refuse."""
    if not isinstance(data, dict) and not hasattr(data, "getlist"):
        raise DomainError("The request body must be a JSON object or a form.")
    serializer = input_class(data=data)
    if not serializer.is_valid():
        errors = {name: [str(m) for m in msgs] if isinstance(msgs, list) else msgs for name, msgs in serializer.errors.items()}
        raise DomainError(validation_summary(errors), errors=errors)
    return dict(serializer.validated_data)


# The API's endpoints, listed by the root (``GET /api/v1/``): (name, URL name, example
# arguments, what it does). ``{id}`` stands for a record's id.
API_ENDPOINTS: tuple[tuple[str, str, tuple[Any, ...], str], ...] = (
    ("patients", "cases-api:patient_list", (), "list (search ?q=, filter, ?ordering=) and register patients"),
    ("patient", "cases-api:patient_detail", ("{id}",), "one patient"),
    ("cases", "cases-api:case_list", (), "list (filter ?patient= ?eye= ?status=) and create examinations"),
    ("case", "cases-api:case_detail", ("{id}",), "one examination"),
    ("case_scan_upload", "cases-api:case_scan_upload", ("{id}",), "upload B-scans or volumes to an examination (multipart 'files'; 202)"),
    ("scans", "cases-api:scan_list", (), "list scans (cursor pages; filter ?case= ?status= ?volume=)"),
    ("scan", "cases-api:scan_detail", ("{id}",), "one scan with its status"),
    ("volume", "cases-api:volume_detail", ("{id}",), "one volume (an acquisition of B-scans)"),
    ("volume_reading", "inference-api:volume_reading", ("{id}",), "the volume's per-eye reading"),
    ("scan_reading", "inference-api:scan_reading", ("{id}",), "the scan's current automated reading: probabilities, class, referral, gate, model version, heatmap URL"),
    ("scan_prediction", "inference-api:scan_prediction", ("{id}",), "the same reading under its first name"),
    ("scan_rerun", "inference-api:scan_rerun", ("{id}",), "queue the scan again for the active model (POST)"),
    ("case_report", "cases-api:case_report", ("{id}",), "the examination report PDF: the signed version while current (?version=N an earlier one), else a draft"),
    ("case_report_state", "cases-api:case_report_state", ("{id}",), "the report's state: draft or signed, every signed version with its PDF link"),
    ("case_report_sign", "cases-api:case_report_sign", ("{id}",), "sign the report as it reads now: the next version (POST; clinic staff)"),
    ("model_versions", "inference-api:model_version_list", (), "model versions, the active one first"),
    ("worklist", "verification-api:worklist", ("{tier}",), "the caller's worklist of a tier (1, 2, 3; cursor pages)"),
    ("review", "verification-api:review", ("{id}",), "a scan's verification state: grades per tier and final label, blinded for the caller"),
    ("grade_submit", "verification-api:grade_submit", ("{id}",), "submit a grade for a scan (POST)"),
    ("volume_worklist", "verification-api:volume_worklist", ("{tier}",), "the caller's worklist of volumes (each graded as one eye) in a tier"),
    ("volume_review", "verification-api:volume_review", ("{id}",), "a volume's verification state: one review for the eye, blinded for the caller"),
    ("volume_grade_submit", "verification-api:volume_grade_submit", ("{id}",), "submit a grade for a whole volume, tier 2 with key B-scans (POST)"),
    ("statistics", "verification-api:statistics", (), "agreement between graders, the model against final labels, per unit ?unit=scan|volume (tier 3)"),
    ("export_verified", "verification-api:export_csv", (), "verified scans and volumes (column unit) with final labels and grades, CSV (tier 3)"),
    ("export_verified_zip", "verification-api:export_zip", (), "verified scans as images by final label with a manifest, ZIP (tier 3)"),
)


def _path(name: str, args: tuple[Any, ...], request: Request) -> str:
    # Reverse with a placeholder number, then put the readable placeholder back.
    numbers = [str(900000001 + i) for i in range(len(args))]
    url = api_reverse(name, request=request, args=numbers)
    for number, placeholder in zip(numbers, args):
        url = url.replace(number, placeholder)
    return url


class ApiRootOutput(serializers.Serializer):
    detail = serializers.CharField()
    version = serializers.CharField(allow_null=True)
    schema = serializers.CharField()
    endpoints = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


@extend_schema(responses={200: ApiRootOutput, **error_responses()}, summary="The endpoints of the API")
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def api_root(request: Request) -> Response:
    """``GET /api/v1/`` (and ``/api/``): every endpoint of the API with what it does (signed-in users)."""
    return Response(
        {
            "detail": "OCT Portal REST API. Session or token authentication; errors are {\"detail\": ..., \"errors\": {...}}.",
            "version": request.version,
            "schema": reverse("v1:schema"),
            "endpoints": [
                {"name": name, "url": _path(url_name, args, request), "description": description}
                for name, url_name, args, description in API_ENDPOINTS
            ],
        }
    )
