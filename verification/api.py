"""REST endpoints of tiered verification (DRF). Blinding comes from ``verification.blinding``."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import django_filters
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cases.diagnoses import Diagnosis
from cases.models import Scan
from cases.roles import GRADER_ROLES, HasRole, Role
from octportal.api import (
    FileContentNegotiation,
    CappedPageNumberPagination,
    QuerysetCursorPagination,
    api_reverse,
    error_responses,
    filter_parameters,
    filtered,
)
from octportal.errors import DomainError, Forbidden, NotFound

from . import blinding, exports, selectors, services
from .forms import FORM_FOR_TIER
from .models import Grade, Tier

SUBMIT = {
    Tier.QUALITY: services.quality_submit,
    Tier.GRADING: services.grade_submit,
    Tier.VERIFICATION: services.verify_submit,
}


class GradeOutput(serializers.ModelSerializer):
    grader = serializers.CharField(source="grader.get_username", read_only=True)
    findings = serializers.DictField(read_only=True)
    superseded = serializers.SerializerMethodField()

    class Meta:
        model = Grade
        fields = [
            "id", "scan", "tier", "grader", "created_at", "time_taken_ms", "comment", "accepted",
            "exclusion_reason", "label", "findings", "confidence", "supersedes", "superseded",
        ]
        read_only_fields = fields

    def get_superseded(self, obj: Grade) -> bool:
        return hasattr(obj, "superseded_by")


class WorklistItemOutput(serializers.ModelSerializer):
    stage = serializers.CharField(source="review.stage")
    model_urgent = serializers.BooleanField(allow_null=True, help_text="null where the tier is blinded to the model")
    tier2_grades = serializers.IntegerField(source="tier2_count", default=None, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Scan
        fields = ["id", "uploaded_at", "stage", "model_urgent", "tier2_grades", "url"]

    def get_url(self, obj: Scan) -> str:
        return api_reverse("verification-api:review", request=self.context.get("request"), args=[obj.pk])


def _require_tier(user: Any, tier: int) -> None:
    if tier not in SUBMIT or not selectors.may_act_in_tier(user, tier):
        raise Forbidden(f"Your role does not allow tier {tier} grading.")


def _scan(pk: int) -> Scan:
    scan = Scan.objects.filter(pk=pk).first()
    if scan is None:
        raise NotFound(f"There is no scan #{pk}.")
    return scan


class WorklistFilter(django_filters.FilterSet):
    """Filters that narrow a worklist without reordering it (its order is the rule's, and
    in reading-centre mode tier 2's order must not tell the model's reading)."""

    uploaded_after = django_filters.IsoDateTimeFilter(field_name="uploaded_at", lookup_expr="gte")
    uploaded_before = django_filters.IsoDateTimeFilter(field_name="uploaded_at", lookup_expr="lte")

    class Meta:
        model = Scan
        fields: list[str] = []


@extend_schema(
    summary="The caller's worklist of a tier (cursor pages, in the worklist's order)",
    parameters=[
        OpenApiParameter("rejected", OpenApiTypes.STR, enum=["1"], description="Tier 1: include gate-rejected scans."),
        *filter_parameters(WorklistFilter),
    ],
    responses={200: WorklistItemOutput(many=True), **error_responses(404)},
)
class WorklistApi(ListAPIView):
    """GET: the scans the caller may take next in a tier (tier 1: ``?rejected=1`` includes
    the scans the input gate rejected, as the page's toggle does). Cursor pages under /api/v1/."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = GRADER_ROLES
    serializer_class = WorklistItemOutput
    pagination_class = QuerysetCursorPagination  # v1 (and the schema); the /api/ alias keeps numbered pages, count capped

    @property
    def paginator(self):
        if not hasattr(self, "_paginator"):
            legacy = self.request.version is None
            self._paginator = CappedPageNumberPagination() if legacy else QuerysetCursorPagination()
        return self._paginator

    def get_queryset(self):
        tier = self.kwargs["tier"]
        _require_tier(self.request.user, tier)
        rejected = self.request.query_params.get("rejected") == "1"
        qs = selectors.worklist_for(user=self.request.user, tier=tier, include_gate_rejected=rejected)
        return filtered(WorklistFilter, self.request, qs)


def review_payload(*, user: Any, scan: Scan) -> dict[str, Any]:
    state = selectors.review_state(user=user, scan=scan)
    review = state["review"]
    ref = state["reference"]
    prediction = ref.prediction if ref is not None else None
    return {
        "scan": scan.pk,
        "stage": review.stage,
        "required_grades": review.required_grades,
        "final_label": review.final_label,
        "verified_by": review.verified_by.get_username() if review.verified_by else None,
        "verified_at": review.verified_at,
        "exclusion_reason": review.exclusion_reason,
        "may_see_reference": state["may_see_reference"],
        "reference": None
        if ref is None
        else {
            "label": ref.label,
            "origin": ref.origin,
            "origin_detail": ref.origin_detail,
            "model": None
            if prediction is None
            else {
                "version": prediction.model_version.label,
                "predicted": prediction.predicted,
                "confidence": prediction.confidence,
                "urgency": prediction.urgency,
                "gate_passed": prediction.gate_passed,
            },
        },
        "grades": GradeOutput(state["grades"], many=True).data,
    }


ReviewOutput = inline_serializer(
    "ReviewOutput",
    {
        "scan": serializers.IntegerField(), "stage": serializers.CharField(),
        "required_grades": serializers.IntegerField(), "final_label": serializers.CharField(allow_blank=True),
        "verified_by": serializers.CharField(allow_null=True), "verified_at": serializers.DateTimeField(allow_null=True),
        "exclusion_reason": serializers.CharField(allow_blank=True), "may_see_reference": serializers.BooleanField(),
        "reference": serializers.DictField(allow_null=True, help_text="label, origin and the model's reading; null "
                                           "while the caller is blinded"),
        "grades": GradeOutput(many=True),
    },
)
GRADE_EXAMPLE = OpenApiExample(
    "A tier 2 grade", value={"tier": 2, "label": "CNV", "cnv": True, "confidence": 4}, request_only=True
)
GradeInput = inline_serializer(
    "GradeInput",
    {
        "tier": serializers.ChoiceField(choices=[1, 2, 3]),
        "decision": serializers.ChoiceField(choices=["accept", "exclude"], required=False, help_text="Tier 1."),
        "reason": serializers.CharField(required=False, help_text="Tier 1: why the scan is excluded."),
        "label": serializers.ChoiceField(choices=Diagnosis.choices, required=False, help_text="Tiers 2 and 3."),
        "cnv": serializers.BooleanField(required=False, help_text="Tier 2 finding."),
        "macular_edema": serializers.BooleanField(required=False, help_text="Tier 2 finding."),
        "drusen": serializers.BooleanField(required=False, help_text="Tier 2 finding."),
        "other": serializers.BooleanField(required=False, help_text="Tier 2 finding."),
        "confidence": serializers.IntegerField(required=False, help_text="Tier 2: 1 (unsure) to 5 (certain)."),
        "comment": serializers.CharField(required=False, max_length=2000),
        "time_taken_ms": serializers.IntegerField(required=False, min_value=0),
    },
)


class ReviewApi(APIView):
    """GET: a scan's verification state, blinded for the caller."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(
        summary="A scan's verification state: grades per tier and the final label, blinded for the caller",
        responses={200: ReviewOutput, **error_responses(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(review_payload(user=request.user, scan=_scan(pk)))


class GradeSubmitApi(APIView):
    """POST {"tier": 1|2|3, ...form fields}: submit the caller's grade on a scan."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = GRADER_ROLES

    @extend_schema(
        summary="Submit the caller's grade", request=GradeInput, examples=[GRADE_EXAMPLE],
        responses={201: GradeOutput, **error_responses(404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        scan = _scan(pk)
        if not isinstance(request.data, dict) and not hasattr(request.data, "getlist"):
            raise DomainError("The request body must be a JSON object or a form.")
        try:
            tier = int(request.data.get("tier"))
        except (TypeError, ValueError):
            raise DomainError("Give the tier: 1, 2 or 3.", errors={"tier": ["Give the tier: 1, 2 or 3."]}) from None
        _require_tier(request.user, tier)
        form = FORM_FOR_TIER[tier](request.data)
        if not form.is_valid():
            raise DomainError("The grade is not valid.", errors=form.errors.get_json_data())
        kwargs = form.service_kwargs()
        if tier != Tier.QUALITY:
            visible = blinding.may_see_reading(user=request.user, scan=scan)
            ref = selectors.reference_for(scan=scan) if visible else None
            kwargs["reference_label"] = ref.label if ref else ""
        grade = SUBMIT[tier](scan=scan, grader=request.user, **kwargs)
        return Response(GradeOutput(grade).data, status=status.HTTP_201_CREATED)


class VerifiedExportApi(APIView):
    """GET the verified scans as CSV (final label, grades per tier; pseudonyms only), streamed: tier 3."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.GRADER_T3,)
    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        summary="Export the verified scans (CSV)",
        responses={(200, "text/csv"): OpenApiTypes.STR, **error_responses()},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        response = StreamingHttpResponse(exports.verified_csv_rows(user=request.user), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        response["Content-Disposition"] = f'attachment; filename="verified-scans-{stamp}.csv"'
        return response


StatisticsOutput = inline_serializer(
    "StatisticsOutput",
    {
        "labels": serializers.ListField(child=serializers.CharField()),
        "pairwise": serializers.ListField(child=serializers.DictField(), help_text="Cohen's kappa per pair of tier 2 graders."),
        "fleiss": serializers.FloatField(allow_null=True),
        "fleiss_subjects": serializers.IntegerField(),
        "fleiss_raters": serializers.IntegerField(),
        "grader_agreement": serializers.ListField(child=serializers.DictField()),
        "model_vs_final": serializers.DictField(allow_null=True, help_text="labels, matrix, n, accuracy, sensitivity"),
        "model_vs_source": serializers.DictField(allow_null=True),
        "qc_total": serializers.IntegerField(),
        "qc_excluded": serializers.IntegerField(),
        "exclusion_reasons": serializers.ListField(child=serializers.ListField(), help_text="[reason, count] pairs"),
        "time_per_tier": serializers.ListField(child=serializers.DictField()),
        "stages": serializers.ListField(child=serializers.ListField(), help_text="[stage, count] pairs"),
    },
)


class StatisticsApi(APIView):
    """GET the verification statistics of the statistics page (agreement, model vs final label): tier 3."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.GRADER_T3,)

    @extend_schema(summary="Verification statistics", responses={200: StatisticsOutput, **error_responses()})
    def get(self, request: Request) -> Response:
        report = selectors.statistics_snapshot(labels=list(Diagnosis.values)).report
        return Response(asdict(report))
