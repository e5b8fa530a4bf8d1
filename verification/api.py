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
from cases.models import Scan, Volume
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
from .models import ExclusionReason, Grade, Tier, Unit, is_volume_unit, review_unit_of

SUBMIT = {
    Tier.QUALITY: services.quality_submit,
    Tier.GRADING: services.grade_submit,
    Tier.VERIFICATION: services.verify_submit,
}


class GradeOutput(serializers.ModelSerializer):
    grader = serializers.CharField(source="grader.get_username", read_only=True)
    findings = serializers.DictField(read_only=True)
    superseded = serializers.SerializerMethodField()
    unit = serializers.ChoiceField(choices=Unit.choices, source="unit_kind", read_only=True,
                                   help_text="What the grade is of: a scan or a whole volume (one eye).")
    key_slices = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=100_000), read_only=True,
        help_text="Tier 2 of a volume: its key B-scans, 0-based slice indices.",
    )
    # Declared: DRF drops allow_blank from read-only model fields, and the schema then
    # said a tier 1 decision's label and a tier 2 grade's exclusion reason could not be "".
    exclusion_reason = serializers.ChoiceField(choices=ExclusionReason.choices, allow_blank=True, read_only=True,
                                               help_text="Tier 1, an excluded image: why; blank otherwise.")
    label = serializers.ChoiceField(choices=Diagnosis.choices, allow_blank=True, read_only=True,
                                    help_text="Tiers 2 and 3: the label; blank for a tier 1 decision.")

    class Meta:
        model = Grade
        fields = [
            "id", "unit", "scan", "volume", "tier", "grader", "created_at", "time_taken_ms", "comment", "accepted",
            "exclusion_reason", "label", "findings", "confidence", "key_slices", "supersedes", "superseded",
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


class VolumeWorklistItemOutput(serializers.ModelSerializer):
    stage = serializers.CharField(source="review.stage")
    model_urgent = serializers.BooleanField(
        allow_null=True, help_text="any B-scan's reading is urgent; null where the tier is blinded to the model"
    )
    tier2_grades = serializers.IntegerField(source="tier2_count", default=None, allow_null=True)
    slice_count = serializers.IntegerField(min_value=1, max_value=100_000)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Volume
        fields = ["id", "uploaded_at", "laterality", "slice_count", "stage", "model_urgent", "tier2_grades", "url"]

    def get_url(self, obj: Volume) -> str:
        return api_reverse("verification-api:volume_review", request=self.context.get("request"), args=[obj.pk])


def _require_tier(user: Any, tier: int) -> None:
    if tier not in SUBMIT or not selectors.may_act_in_tier(user, tier):
        raise Forbidden(f"Your role does not allow tier {tier} grading.")


def _scan(pk: int) -> Scan:
    scan = Scan.objects.filter(pk=pk).first()
    if scan is None:
        raise NotFound(f"There is no scan #{pk}.")
    return scan


def _volume(pk: int) -> Volume:
    """A volume graded as one unit (more than one B-scan); a volume of one is graded as its scan."""
    volume = Volume.objects.filter(pk=pk).first()
    if volume is None:
        raise NotFound(f"There is no volume #{pk}.")
    if not is_volume_unit(volume):
        raise NotFound(f"Volume #{pk} has one B-scan: it is reviewed as that scan (verification/scans/<id>/).")
    return volume


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
    #: The filters on the worklist (``worklist`` gives its rows).
    worklist_filter: type[django_filters.FilterSet] = WorklistFilter

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
        qs = self.worklist(user=self.request.user, tier=tier, include_gate_rejected=rejected)
        return filtered(self.worklist_filter, self.request, qs)

    def worklist(self, **kwargs):
        return selectors.worklist_for(**kwargs)


class VolumeWorklistFilter(WorklistFilter):
    class Meta:
        model = Volume
        fields: list[str] = []


class VolumeWorklistApi(WorklistApi):
    """GET: the volumes (each graded as one eye) the caller may take next in a tier (tier 1:
    ``?rejected=1`` includes the volumes the input gate rejected every B-scan of, as the
    page's toggle does). Cursor pages under /api/v1/."""

    serializer_class = VolumeWorklistItemOutput
    worklist_filter = VolumeWorklistFilter

    def worklist(self, **kwargs):
        return selectors.volume_worklist_for(**kwargs)


VolumeWorklistApi = extend_schema(
    summary="The caller's worklist of volumes in a tier (cursor pages, in the worklist's order)",
    parameters=[
        OpenApiParameter("rejected", OpenApiTypes.STR, enum=["1"],
                         description="Tier 1: include volumes the input gate rejected every B-scan of."),
        *filter_parameters(VolumeWorklistFilter),
    ],
    responses={200: VolumeWorklistItemOutput(many=True), **error_responses(404)},
)(VolumeWorklistApi)


def _review_fields(review: Any, state: dict[str, Any]) -> dict[str, Any]:
    """What a scan's and a volume's verification state share."""
    return {
        "stage": review.stage,
        "required_grades": review.required_grades,
        "final_label": review.final_label,
        "verified_by": review.verified_by.get_username() if review.verified_by else None,
        "verified_at": review.verified_at,
        "exclusion_reason": review.exclusion_reason,
        "may_see_reference": state["may_see_reference"],
    }


def review_payload(*, user: Any, scan: Scan) -> dict[str, Any]:
    state = selectors.review_state(user=user, scan=scan)
    review = state["review"]
    ref = state["reference"]
    prediction = ref.prediction if ref is not None else None
    unit = review_unit_of(scan)
    return {
        "unit": Unit.SCAN.value,
        "graded_as_volume": unit.pk if isinstance(unit, Volume) else None,
        "scan": scan.pk,
        **_review_fields(review, state),
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
                "low_confidence": prediction.low_confidence,
                "quality_reasons": prediction.quality_reasons,
            },
        },
        "grades": GradeOutput(state["grades"], many=True).data,
    }


def volume_review_payload(*, user: Any, volume: Volume) -> dict[str, Any]:
    state = selectors.volume_review_state(user=user, volume=volume)
    review, eye = state["review"], state["eye_reading"]
    return {
        "unit": Unit.VOLUME.value,
        "volume": volume.pk,
        "slice_count": volume.slice_count,
        **_review_fields(review, state),
        "eye_reading": None
        if eye is None
        else {
            "diagnosis": eye.diagnosis,
            "urgency": eye.urgency,
            "urgent_slices": eye.urgent_slices,
            "slices_read": eye.slices_read,
            "key_slices": eye.key_slices,
        },
        "grades": GradeOutput(state["grades"], many=True).data,
    }


ReviewOutput = inline_serializer(
    "ReviewOutput",
    {
        "unit": serializers.CharField(help_text='"scan": this review counts one B-scan.'),
        "graded_as_volume": serializers.IntegerField(
            allow_null=True, min_value=1, max_value=2**63 - 1,
            help_text="The volume this B-scan is graded with (one review per volume); null for a scan graded alone.",
        ),
        "scan": serializers.IntegerField(), "stage": serializers.CharField(),
        "required_grades": serializers.IntegerField(), "final_label": serializers.CharField(allow_blank=True),
        "verified_by": serializers.CharField(allow_null=True), "verified_at": serializers.DateTimeField(allow_null=True),
        "exclusion_reason": serializers.CharField(allow_blank=True), "may_see_reference": serializers.BooleanField(),
        "reference": serializers.DictField(allow_null=True, help_text="label, origin and the model's reading; null "
                                           "while the caller is blinded"),
        "grades": GradeOutput(many=True),
    },
)
VolumeReviewOutput = inline_serializer(
    "VolumeReviewOutput",
    {
        "unit": serializers.CharField(help_text='"volume": this review counts one volume (one eye).'),
        "volume": serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        "slice_count": serializers.IntegerField(min_value=2, max_value=100_000),
        "stage": serializers.CharField(),
        "required_grades": serializers.IntegerField(min_value=1, max_value=32767),
        "final_label": serializers.CharField(allow_blank=True),
        "verified_by": serializers.CharField(allow_null=True), "verified_at": serializers.DateTimeField(allow_null=True),
        "exclusion_reason": serializers.CharField(allow_blank=True), "may_see_reference": serializers.BooleanField(),
        "eye_reading": serializers.DictField(allow_null=True, help_text="the per-eye reading (diagnosis, urgency, "
                                             "key B-scans); null while the caller is blinded or none is read"),
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
        "key_slices": serializers.ListField(
            child=serializers.IntegerField(min_value=0, max_value=100_000), required=False,
            help_text="Tier 2 of a volume: key B-scans, 0-based slice indices within the volume.",
        ),
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


class VolumeReviewApi(APIView):
    """GET: a volume's verification state (one review for the eye), blinded for the caller."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(
        summary="A volume's verification state: grades of the eye per tier and its final label, blinded for the caller",
        responses={200: VolumeReviewOutput, **error_responses(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(volume_review_payload(user=request.user, volume=_volume(pk)))


def _grade_input(request: Request) -> tuple[int, dict[str, Any]]:
    """The tier and the service keywords of a grade request (validated by the tier's form)."""
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
    return tier, form.service_kwargs()


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
        tier, kwargs = _grade_input(request)
        if request.data.get("key_slices") not in (None, "", []):
            raise DomainError("Key B-scans are marked on volumes only.", errors={"key_slices": ["Only for a volume."]})
        if tier != Tier.QUALITY:
            visible = blinding.may_see_reading(user=request.user, scan=scan)
            ref = selectors.reference_for(scan=scan) if visible else None
            kwargs["reference_label"] = ref.label if ref else ""
        grade = SUBMIT[tier](scan=scan, grader=request.user, **kwargs)
        return Response(GradeOutput(grade).data, status=status.HTTP_201_CREATED)


VOLUME_GRADE_EXAMPLE = OpenApiExample(
    "A tier 2 grade of an eye with key B-scans",
    value={"tier": 2, "label": "CNV", "cnv": True, "confidence": 4, "key_slices": [11, 12, 24]},
    request_only=True,
)


class VolumeGradeSubmitApi(APIView):
    """POST {"tier": 1|2|3, ...}: submit the caller's grade of a whole volume (tier 1:
    accept or exclude the volume; tier 2: the eye, optionally ``key_slices``; tier 3: verify)."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = GRADER_ROLES

    @extend_schema(
        summary="Submit the caller's grade of a volume (one eye)", request=GradeInput,
        examples=[VOLUME_GRADE_EXAMPLE], responses={201: GradeOutput, **error_responses(404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        volume = _volume(pk)
        tier, kwargs = _grade_input(request)
        keys = request.data.get("key_slices") if hasattr(request.data, "get") else None
        if keys not in (None, "", []):
            if tier != Tier.GRADING:
                raise DomainError("Key B-scans belong to a tier 2 grade.", errors={"key_slices": ["Tier 2 only."]})
            kwargs["key_slices"] = keys
        if tier != Tier.QUALITY:
            state = selectors.volume_review_state(user=request.user, volume=volume)
            kwargs["reference_label"] = state["eye_reading"].diagnosis if state["eye_reading"] else ""
        grade = SUBMIT[tier](volume=volume, grader=request.user, **kwargs)
        return Response(GradeOutput(grade).data, status=status.HTTP_201_CREATED)


class ExportApi(APIView):
    """The exports page's downloads, streamed, pseudonymous (``verification.exports``): tier 3."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.GRADER_T3,)
    content_negotiation_class = FileContentNegotiation

    @staticmethod
    def download(stream: Any, *, content_type: str, name: str) -> StreamingHttpResponse:
        # The same file names as the exports page (verification.views).
        response = StreamingHttpResponse(stream, content_type=content_type)
        stem, extension = name.rsplit(".", 1)
        response["Content-Disposition"] = f'attachment; filename="{stem}-{timezone.now():%Y%m%d-%H%M}.{extension}"'
        return response


class VerifiedExportApi(ExportApi):
    """GET the verified scans as CSV (final label, grades per tier; pseudonyms only), streamed: tier 3."""

    @extend_schema(
        summary="Export the verified scans (CSV)",
        responses={(200, "text/csv"): OpenApiTypes.STR, **error_responses()},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        rows = exports.verified_csv_rows(user=request.user)
        return self.download(rows, content_type="text/csv", name="verified-scans.csv")


class VerifiedZipExportApi(ExportApi):
    """GET the verified scans for retraining as a ZIP, streamed: ``CLASS/CLASS-PSEUDONYM-N.png``
    (pixels re-encoded without metadata, a fixed timestamp) and MANIFEST.csv: tier 3."""

    @extend_schema(
        summary="Export the verified scans (ZIP of images by final label)",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **error_responses()},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        chunks = exports.verified_zip_stream(user=request.user)
        return self.download(chunks, content_type="application/zip", name="verified-oct.zip")


StatisticsOutput = inline_serializer(
    "StatisticsOutput",
    {
        "unit": serializers.ChoiceField(choices=Unit.choices, help_text="What is counted: single B-scans or volumes (eyes)."),
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

    @extend_schema(
        summary="Verification statistics of one review unit",
        parameters=[OpenApiParameter(
            "unit", OpenApiTypes.STR, enum=Unit.values,
            description="scan (default): single B-scans; volume: volumes graded as one eye.",
        )],
        responses={200: StatisticsOutput, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        unit = request.query_params.get("unit") or Unit.SCAN.value
        if unit not in Unit.values:
            raise DomainError(f"unit is one of {', '.join(Unit.values)}.", errors={"unit": ["scan or volume"]})
        report = selectors.statistics_snapshot(labels=list(Diagnosis.values)).by_unit[unit]
        return Response(asdict(report))
