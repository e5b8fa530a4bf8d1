"""REST endpoints of automated reading (thin: selectors and services do the work)."""
from __future__ import annotations

import django_filters
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cases import selectors as cases_selectors
from cases.models import Scan
from cases.roles import GRADER_ROLES, HasRole, Role
from octportal.api import error_responses, filter_parameters, filtered
from octportal.errors import Forbidden
from verification import blinding

from . import selectors, services
from .models import ModelVersion, Prediction

READING_HIDDEN = "The model's reading of this scan is hidden until you have submitted your own grade."


class ModelVersionOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "version", "sha256", "file_name", "metrics", "is_active", "created_at"]


class PredictionOutput(serializers.ModelSerializer):
    model_version = ModelVersionOutput(read_only=True)
    probabilities = serializers.DictField(child=serializers.FloatField(), read_only=True)
    heatmap_url = serializers.SerializerMethodField()
    quality_reasons = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text="Why the reading is low confidence, worst first (e.g. 'noisy image', 'no foveal pit').",
    )
    quality_components = serializers.DictField(
        child=serializers.FloatField(), read_only=True,
        help_text="Each component's badness in [0, 1]: noise, contrast, pit, uncertainty, gate (docs/inference.md).",
    )

    class Meta:
        model = Prediction
        fields = [
            "id",
            "scan",
            "model_version",
            "probabilities",
            "predicted",
            "confidence",
            "urgency",
            "oct_score",
            "gate_passed",
            "quality_score",
            "low_confidence",
            "quality_reasons",
            "quality_components",
            "heatmap_url",
            "inference_ms",
            "created_at",
        ]

    def get_heatmap_url(self, obj: Prediction) -> str | None:
        if not obj.heatmap:
            return None
        request = self.context.get("request")
        url = reverse("inference:heatmap", args=[obj.scan_id])
        return request.build_absolute_uri(url) if request else url


ScanStatusOutput = inline_serializer(
    "ScanStatusOutput",
    {"scan": serializers.IntegerField(), "status": serializers.CharField(),
     "detail": serializers.CharField(required=False)},
)
ScanReadingOutput = inline_serializer(
    "ScanReadingOutput",
    {"scan": serializers.IntegerField(), "status": serializers.CharField(),
     "detail": serializers.CharField(required=False), "prediction": PredictionOutput(required=False)},
)
VolumeReadingOutput = inline_serializer(
    "VolumeReadingOutput",
    {
        "volume": serializers.IntegerField(), "case": serializers.IntegerField(), "laterality": serializers.CharField(),
        "slice_count": serializers.IntegerField(), "pending": serializers.IntegerField(),
        "reading": serializers.DictField(allow_null=True, help_text="diagnosis, urgency, urgent_slices, slices_read, "
                                         "key_slices, rule; null until enough B-scans are read"),
        "slices": serializers.ListField(child=serializers.DictField()),
    },
)


def _status(scan: Scan) -> dict:
    body = {"scan": scan.pk, "status": scan.status}
    if scan.status == scan.Status.FAILED:
        body["detail"] = scan.status_detail
    return body


class ScanPredictionApi(APIView):
    """GET the current reading of a scan, with its status; 404 when there is none (yet)."""

    permission_classes = [HasRole]
    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(
        summary="The scan's current automated reading",
        description="Probabilities per class, predicted class, referral urgency, the input gate, the model version "
        "and the heatmap URL. 404 (with the scan's status) while it has not been read; 403 for a tier 2 grader "
        "blinded to it in reading-centre mode.",
        responses={200: ScanReadingOutput, **error_responses(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        scan = cases_selectors.scan_image_get(user=request.user, scan_id=pk)
        if not blinding.may_see_reading(user=request.user, scan=scan):
            raise Forbidden(READING_HIDDEN)
        prediction = selectors.prediction_current(scan=scan)
        body = _status(scan)
        if prediction is None:
            body["detail"] = body.get("detail") or "This scan has not been read yet."
            return Response(body, status=status.HTTP_404_NOT_FOUND)
        body["prediction"] = PredictionOutput(prediction, context={"request": request}).data
        return Response(body)


class ScanRerunApi(APIView):
    """POST: queue the scan again on the active model version (clinic staff, admins)."""

    permission_classes = [HasRole]
    allowed_roles = (Role.CLINICIAN,)

    @extend_schema(summary="Queue the scan again", request=None, responses={202: ScanStatusOutput, **error_responses(404, 409)})
    def post(self, request: Request, pk: int) -> Response:
        scan = cases_selectors.scan_image_get(user=request.user, scan_id=pk)
        scan = services.scan_rerun(scan=scan, user=request.user)
        return Response(_status(scan), status=status.HTTP_202_ACCEPTED)


class ModelVersionFilter(django_filters.FilterSet):
    is_active = django_filters.BooleanFilter()
    name = django_filters.CharFilter()

    class Meta:
        model = ModelVersion
        fields: list[str] = []


class ModelVersionListApi(APIView):
    """GET every registered model version, the active one first (a short list, not paged)."""

    permission_classes = [HasRole]
    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(
        summary="Model versions", parameters=filter_parameters(ModelVersionFilter),
        responses={200: ModelVersionOutput(many=True), **error_responses()},
    )
    def get(self, request: Request) -> Response:
        qs = filtered(ModelVersionFilter, request, selectors.model_version_list())
        return Response(ModelVersionOutput(qs, many=True).data)


class VolumeReadingApi(APIView):
    """GET a volume's per-eye reading and each B-scan's urgent probability (readings the
    user may not see are left out, as on the page)."""

    permission_classes = [HasRole]
    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(summary="The volume's per-eye reading", responses={200: VolumeReadingOutput, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        volume = cases_selectors.volume_image_get(user=request.user, volume_id=pk)
        ids = list(volume.scans.values_list("pk", flat=True))
        analysis = selectors.volume_reading(
            volume=volume, visible_ids=blinding.reading_visible_ids(user=request.user, scan_ids=ids)
        )
        reading = analysis.reading
        return Response({
            "volume": volume.pk,
            "case": volume.case_id,
            "laterality": volume.laterality,
            "slice_count": volume.slice_count,
            "pending": analysis.pending,
            "reading": None if reading is None else {
                "diagnosis": reading.diagnosis,
                "urgency": reading.urgency,
                "urgent_slices": reading.urgent_slices,
                "slices_read": reading.slices_read,
                "key_slices": reading.key_slices,
                "rule": {"min_slices": reading.min_slices, "min_p": reading.min_p},
            },
            "slices": analysis.slices,
        })
