"""REST API of clinical records (DRF). Serializers check shape; services do the work."""
from __future__ import annotations

from typing import Any

import django_filters
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from intake import volumes as intake_volumes

from octportal.api import (
    CURSOR_PARAMETERS,
    FileContentNegotiation,
    PAGE_PARAMETERS,
    CappedPageNumberPagination,
    QuerysetCursorPagination,
    api_reverse,
    error_responses,
    filter_parameters,
    filtered,
    page_of,
    validated,
)
from octportal.errors import DomainError, NotFound
from verification import blinding
from verification import reports as verification_reports

from . import selectors, services
from .models import Case, Patient, Scan, Volume
from .roles import GRADER_ROLES, HasRole, Role


class ClinicApi(APIView):
    permission_classes = [HasRole]
    allowed_roles: tuple[str, ...] = (Role.CLINICIAN,)

    def paginate(
        self, request: Request, qs: Any, serializer_class: type[serializers.Serializer], *, cursor: bool = False
    ) -> Response:
        # /api/v1/ pages long lists by cursor; the unversioned aliases keep numbered pages.
        use_cursor = cursor and request.version is not None
        if use_cursor:
            paginator = QuerysetCursorPagination()
        else:  # a long list (cursor on v1) keeps numbered pages on the aliases, its count capped
            paginator = CappedPageNumberPagination() if cursor else api_settings.DEFAULT_PAGINATION_CLASS()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = serializer_class(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


# --- output serializers ---------------------------------------------------------------


# Integer model fields get their bounds from the database backend (SQLite and PostgreSQL
# differ), which would make the committed OpenAPI schema depend on where it was made:
# the outputs state the bounds that hold everywhere.
class PatientOutput(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    birth_year = serializers.IntegerField(read_only=True, allow_null=True, min_value=1900, max_value=2100)

    class Meta:
        model = Patient
        fields = ["id", "identifier", "sex", "birth_year", "notes", "created_at", "url"]

    def get_url(self, obj: Patient) -> str:
        return api_reverse("cases-api:patient_detail", request=self.context.get("request"), args=[obj.pk])


class CaseOutput(serializers.ModelSerializer):
    patient_identifier = serializers.CharField(source="patient.identifier", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Case
        fields = [
            "id", "patient", "patient_identifier", "eye", "exam_date", "device", "referring_clinician",
            "status", "notes", "created_at", "url",
        ]

    def get_url(self, obj: Case) -> str:
        return api_reverse("cases-api:case_detail", request=self.context.get("request"), args=[obj.pk])


class ScanOutput(serializers.ModelSerializer):
    """A scan as the caller may see it: graders get the neutral scan code instead of the
    uploaded file name, no link to the uploaded bytes, and, while blinded, no source
    label and no failure detail (both come from the label or the model)."""

    image_url = serializers.SerializerMethodField()
    original_url = serializers.SerializerMethodField()
    original_name = serializers.SerializerMethodField()
    file_size = serializers.IntegerField(read_only=True, min_value=0)
    width = serializers.IntegerField(read_only=True, min_value=1)
    height = serializers.IntegerField(read_only=True, min_value=1)
    slice_index = serializers.IntegerField(read_only=True, allow_null=True, min_value=0)
    url = serializers.SerializerMethodField()
    reading_url = serializers.SerializerMethodField()
    source_label = serializers.SerializerMethodField()
    status_detail = serializers.SerializerMethodField()

    class Meta:
        model = Scan
        fields = [
            "id", "code", "case", "original_name", "format", "original_mode", "file_size", "width", "height", "sha256",
            "status", "status_detail", "source_label", "uploaded_at", "url", "reading_url", "image_url", "original_url",
            "volume", "slice_index", "slice_position_mm",
        ]

    def _user(self) -> Any:
        return self.context["request"].user

    def _visible(self, obj: Scan) -> bool:
        # One blinding query for the whole page (the context is shared with the list).
        visible = self.context.get("reference_visible_ids")
        if visible is None:
            scans = self.parent.instance if self.parent is not None else [obj]
            visible = blinding.reading_visible_ids(user=self._user(), scan_ids=[s.pk for s in scans])
            self.context["reference_visible_ids"] = visible
        return obj.pk in visible

    def get_url(self, obj: Scan) -> str:
        return api_reverse("cases-api:scan_detail", request=self.context.get("request"), args=[obj.pk])

    def get_reading_url(self, obj: Scan) -> str:
        return api_reverse("inference-api:scan_reading", request=self.context.get("request"), args=[obj.pk])

    def get_image_url(self, obj: Scan) -> str:
        return reverse("cases:scan_image", args=[obj.pk])

    def get_original_url(self, obj: Scan) -> str | None:
        if not obj.original or not blinding.may_see_file_names(self._user()):
            return None
        return reverse("cases:scan_image", args=[obj.pk]) + "?original=1"

    def get_original_name(self, obj: Scan) -> str:
        return blinding.scan_display_name(user=self._user(), scan=obj)

    def get_source_label(self, obj: Scan) -> str | None:
        return obj.source_label if self._visible(obj) else None

    def get_status_detail(self, obj: Scan) -> str:
        return obj.status_detail if self._visible(obj) else ""


class VolumeOutput(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    slice_count = serializers.IntegerField(read_only=True, min_value=1)
    reading_url = serializers.SerializerMethodField()
    original_name = serializers.SerializerMethodField()

    class Meta:
        model = Volume
        fields = [
            "id", "case", "source_format", "modality", "scan_pattern", "laterality", "acquisition_date", "device",
            "slice_count", "pixel_spacing_axial_mm", "pixel_spacing_lateral_mm", "slice_spacing_mm", "removed_tags",
            "original_name", "uploaded_at", "url", "reading_url",
        ]

    def get_url(self, obj: Volume) -> str:
        return api_reverse("cases-api:volume_detail", request=self.context.get("request"), args=[obj.pk])

    def get_reading_url(self, obj: Volume) -> str:
        return api_reverse("inference-api:volume_reading", request=self.context.get("request"), args=[obj.pk])

    def get_original_name(self, obj: Volume) -> str:
        # Uploaded file names may carry patient names: clinic staff only (blinding).
        request = self.context.get("request")
        if request is None or blinding.may_see_file_names(request.user):
            return obj.original_name
        return ""


# --- filters (django-filter; ?ordering= with the fields listed) -------------------------


class PatientFilter(django_filters.FilterSet):
    sex = django_filters.ChoiceFilter(choices=Patient.Sex.choices)
    born_after = django_filters.NumberFilter(field_name="birth_year", lookup_expr="gte")
    born_before = django_filters.NumberFilter(field_name="birth_year", lookup_expr="lte")
    ordering = django_filters.OrderingFilter(fields=("identifier", "created_at", "birth_year"))

    class Meta:
        model = Patient
        fields: list[str] = []


class CaseFilter(django_filters.FilterSet):
    eye = django_filters.ChoiceFilter(choices=Case.Eye.choices)
    status = django_filters.ChoiceFilter(choices=Case.Status.choices)
    exam_after = django_filters.DateFilter(field_name="exam_date", lookup_expr="gte")
    exam_before = django_filters.DateFilter(field_name="exam_date", lookup_expr="lte")
    ordering = django_filters.OrderingFilter(fields=("exam_date", "created_at", "id"))

    class Meta:
        model = Case
        fields: list[str] = []


class ScanFilter(django_filters.FilterSet):
    volume = django_filters.NumberFilter(field_name="volume_id", min_value=1)
    uploaded_after = django_filters.IsoDateTimeFilter(field_name="uploaded_at", lookup_expr="gte")
    uploaded_before = django_filters.IsoDateTimeFilter(field_name="uploaded_at", lookup_expr="lte")
    ordering = django_filters.OrderingFilter(fields=("uploaded_at", "id", "file_size"))

    class Meta:
        model = Scan
        fields: list[str] = []


# --- input serializers ----------------------------------------------------------------


class PatientInput(serializers.Serializer):
    identifier = serializers.CharField(max_length=64)
    sex = serializers.ChoiceField(choices=Patient.Sex.choices, required=False, allow_blank=True, default="")
    birth_year = serializers.IntegerField(required=False, allow_null=True, default=None)
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class CaseInput(serializers.Serializer):
    patient = serializers.IntegerField()
    eye = serializers.ChoiceField(choices=Case.Eye.choices)
    exam_date = serializers.DateField()
    device = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    referring_clinician = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise DomainError(f"{name}: Must be an integer id.", errors={name: ["Must be an integer id."]}) from None
    if not 0 < value < 2**63:  # beyond a database integer (SQLite raises OverflowError)
        raise DomainError(f"{name}: Must be an integer id.", errors={name: ["Must be an integer id."]})
    return value


# --- endpoints ------------------------------------------------------------------------

PATIENT_EXAMPLE = OpenApiExample(
    "A patient", value={"identifier": "MRN-0042", "sex": "F", "birth_year": 1951, "notes": ""}, request_only=True
)
CASE_EXAMPLE = OpenApiExample(
    "An examination", value={"patient": 1, "eye": "OD", "exam_date": "2026-03-02", "device": "Spectralis"},
    request_only=True,
)
Q_PARAMETER = OpenApiParameter("q", OpenApiTypes.STR, description="Search in the identifier.")
ID_PARAMETER = lambda name, what: OpenApiParameter(name, OpenApiTypes.INT, description=what)  # noqa: E731

UploadOutput = inline_serializer(
    "UploadOutput",
    {
        "accepted": ScanOutput(many=True),
        "volumes": VolumeOutput(many=True),
        "rejected": inline_serializer(
            "RejectedFileOutput", {"name": serializers.CharField(), "reason": serializers.CharField()}, many=True
        ),
    },
)
UploadInput = inline_serializer(
    "UploadInput",
    {
        "files": serializers.ListField(child=serializers.FileField(), help_text="B-scan images or volume files."),
        "eye": serializers.ChoiceField(choices=Case.Eye.choices, required=False,
                                       help_text="Only for a volume whose file does not record the eye."),
    },
)


class PatientListCreateApi(ClinicApi):
    @extend_schema(
        summary="List patients", operation_id="patients_list", parameters=[Q_PARAMETER, *filter_parameters(PatientFilter), *PAGE_PARAMETERS],
        responses={200: page_of(PatientOutput), **error_responses(404)},
    )
    def get(self, request: Request) -> Response:
        qs = selectors.patient_list(user=request.user, query=request.query_params.get("q", ""))
        return self.paginate(request, filtered(PatientFilter, request, qs), PatientOutput)

    @extend_schema(
        summary="Register a patient", request=PatientInput, examples=[PATIENT_EXAMPLE],
        responses={201: PatientOutput, **error_responses(409)},
    )
    def post(self, request: Request) -> Response:
        patient = services.patient_create(created_by=request.user, **validated(PatientInput, request.data))
        return Response(PatientOutput(patient, context={"request": request}).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(ClinicApi):
    @extend_schema(summary="One patient", responses={200: PatientOutput, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        patient = selectors.patient_get(user=request.user, patient_id=pk)
        return Response(PatientOutput(patient, context={"request": request}).data)


class CaseListCreateApi(ClinicApi):
    @extend_schema(
        summary="List examinations", operation_id="cases_list",
        parameters=[ID_PARAMETER("patient", "Only this patient's."), *filter_parameters(CaseFilter), *PAGE_PARAMETERS],
        responses={200: page_of(CaseOutput), **error_responses(404)},
    )
    def get(self, request: Request) -> Response:
        qs = selectors.case_list(user=request.user, patient_id=_int_param(request, "patient"))
        return self.paginate(request, filtered(CaseFilter, request, qs), CaseOutput)

    @extend_schema(
        summary="Create an examination", request=CaseInput, examples=[CASE_EXAMPLE],
        responses={201: CaseOutput, **error_responses(404)},
    )
    def post(self, request: Request) -> Response:
        fields = validated(CaseInput, request.data)
        patient = selectors.patient_get(user=request.user, patient_id=fields.pop("patient"))
        case = services.case_create(patient=patient, created_by=request.user, **fields)
        return Response(CaseOutput(case, context={"request": request}).data, status=status.HTTP_201_CREATED)


class CaseDetailApi(ClinicApi):
    @extend_schema(summary="One examination", responses={200: CaseOutput, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        case = selectors.case_get(user=request.user, case_id=pk)
        return Response(CaseOutput(case, context={"request": request}).data)


class ScanListApi(ClinicApi):
    @extend_schema(
        summary="List scans (cursor pages, upload order)", operation_id="scans_list",
        parameters=[
            ID_PARAMETER("case", "Only this examination's."),
            OpenApiParameter("status", OpenApiTypes.STR, enum=Scan.Status.values),
            *filter_parameters(ScanFilter), *CURSOR_PARAMETERS,
        ],
        responses={200: page_of(ScanOutput, cursor=True), **error_responses(404)},
    )
    def get(self, request: Request) -> Response:
        qs = selectors.scan_list(
            user=request.user, case_id=_int_param(request, "case"), status=request.query_params.get("status", "")
        )
        return self.paginate(request, filtered(ScanFilter, request, qs), ScanOutput, cursor=True)


class ScanDetailApi(ClinicApi):
    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(summary="One scan with its status", responses={200: ScanOutput, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        scan = selectors.scan_image_get(user=request.user, scan_id=pk)
        return Response(ScanOutput(scan, context={"request": request}).data)


class VolumeDetailApi(ClinicApi):
    """GET one volume (an acquisition): its geometry and removed tags; B-scans via ``/scans/?volume=``."""

    allowed_roles = (Role.CLINICIAN, *GRADER_ROLES)

    @extend_schema(summary="One volume", responses={200: VolumeOutput, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        volume = selectors.volume_image_get(user=request.user, volume_id=pk)
        return Response(VolumeOutput(volume, context={"request": request}).data)


class CaseScanUploadApi(ClinicApi):
    """POST multipart ``files`` (images and volume files) into a case; answer what was accepted and rejected.

    ``eye`` (OD/OS) is required only for a volume whose file does not record the eye. Under
    /api/v1/ an accepted upload answers 202 (the readings follow): each scan's ``url`` is
    its status URL. A rejected file is named with its reason and nothing of it is stored.
    """

    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "upload"

    @extend_schema(
        summary="Upload B-scans or volumes to an examination",
        request={"multipart/form-data": UploadInput},
        responses={202: UploadOutput, **error_responses(404, 413)},
    )
    def post(self, request: Request, pk: int) -> Response:
        case = selectors.case_get(user=request.user, case_id=pk)
        files = request.FILES.getlist("files")
        if not files:
            if request.data.get("files"):
                raise DomainError("The field 'files' must carry uploaded files (multipart/form-data).")
            raise DomainError("Send one or more images in the multipart field 'files'.")
        report = intake_volumes.uploads_submit(
            case=case, files=files, uploaded_by=request.user, eye=str(request.data.get("eye", "") or "")
        )
        context = {"request": request}
        body = {
            "accepted": ScanOutput(report.accepted, many=True, context=context).data,
            "volumes": VolumeOutput(report.volumes, many=True, context=context).data,
            "rejected": [{"name": name, "reason": reason} for name, reason in report.rejected],
        }
        if not report.accepted:
            if request.version:
                raise DomainError("No file was accepted.", errors={"files": [f"{n}: {r}" for n, r in report.rejected]})
            return Response({"detail": "No file was accepted.", **body}, status=status.HTTP_400_BAD_REQUEST)
        accepted = status.HTTP_202_ACCEPTED if request.version else status.HTTP_201_CREATED
        return Response(body, status=accepted)


class CaseReportApi(ClinicApi):
    """GET the examination report PDF: the signed version while it is current (``?version=N``
    for an earlier one), else a draft of what it would say now. Named by the case id only."""

    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        summary="The examination report (PDF)",
        parameters=[OpenApiParameter("version", OpenApiTypes.INT, description="A signed version's number.")],
        responses={(200, "application/pdf"): OpenApiTypes.BINARY, **error_responses(404)},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        case = selectors.case_get(user=request.user, case_id=pk)
        name = f"oct-report-case{case.pk}-{case.exam_date:%Y%m%d}"
        number = request.query_params.get("version", "")
        if number:
            if not number.isdigit() or len(number) > 9:
                raise DomainError("version: Must be a version number.", errors={"version": ["Must be a version number."]})
            signed = verification_reports.report_versions(case=case).filter(number=int(number)).first()
            if signed is None:
                raise NotFound("There is no such version of this report.")
            return _pdf(signed, f"{name}-v{signed.number}.pdf")
        state = verification_reports.report_state(case=case, user=request.user)
        if state.current:
            return _pdf(state.latest, f"{name}-v{state.latest.number}.pdf")
        data = verification_reports.report_data(case=case, user=request.user)
        return _pdf_bytes(verification_reports.report_pdf(data=data, outdated=state.latest), f"{name}-draft.pdf")


class ReportVersionOutput(serializers.Serializer):
    """A signed version of the report: who signed it, when, and its stored PDF."""

    number = serializers.IntegerField(min_value=1)
    signed_by = serializers.CharField(source="signed_by.get_username")
    signed_at = serializers.DateTimeField()
    current = serializers.SerializerMethodField(help_text="It still says what the report would say now.")
    pdf_url = serializers.SerializerMethodField()

    def get_current(self, obj: Any) -> bool:
        return obj.pk == self.context.get("current_version_id")

    def get_pdf_url(self, obj: Any) -> str:
        url = api_reverse("cases-api:case_report", request=self.context.get("request"), args=[obj.case_id])
        return f"{url}?version={obj.number}"


REPORT_STATUSES = {
    "unsigned": "never signed: the PDF is a draft",
    "signed": "the latest signed version is current: the PDF is that version",
    "changed": "changed since the latest version was signed: the PDF is a draft until signed again",
}


ReportOutput = inline_serializer(
    "ReportOutput",
    {
        "case": serializers.IntegerField(),
        "status": serializers.ChoiceField(choices=list(REPORT_STATUSES.items())),
        "current_version": serializers.IntegerField(
            allow_null=True, min_value=1, help_text="The signed version the PDF serves; null while it is a draft."
        ),
        "may_sign": serializers.BooleanField(help_text="Signing now would make a new version."),
        "pdf_url": serializers.CharField(help_text="The PDF as it reads now (signed version or draft)."),
        "sign_url": serializers.CharField(),
        "versions": ReportVersionOutput(many=True, help_text="Every signed version, newest first."),
    },
)
REPORT_EXAMPLE = OpenApiExample(
    "Changed since version 1 was signed",
    value={
        "case": 3, "status": "changed", "current_version": None, "may_sign": True,
        "pdf_url": "/api/v1/cases/3/report.pdf", "sign_url": "/api/v1/cases/3/report/sign/",
        "versions": [{"number": 1, "signed_by": "dr.meyer", "signed_at": "2026-03-02T10:15:00Z", "current": False,
                      "pdf_url": "/api/v1/cases/3/report.pdf?version=1"}],
    },
    response_only=True,
)
SIGNED_EXAMPLE = OpenApiExample(
    "Version 2 signed",
    value={"number": 2, "signed_by": "dr.meyer", "signed_at": "2026-03-03T08:01:00Z", "current": True,
           "pdf_url": "/api/v1/cases/3/report.pdf?version=2"},
    response_only=True, status_codes=["201"],
)
SIGN_REFUSALS = [
    OpenApiExample(
        "Nothing changed since the last signature",
        value={"detail": "Version 2 of this report is already signed and nothing has changed since."},
        response_only=True, status_codes=["409"],
    ),
    OpenApiExample(
        "A scan still being read",
        value={"detail": verification_reports.readings_pending_text(2)}, response_only=True, status_codes=["409"],
    ),
    OpenApiExample(
        "No scans to report",
        value={"detail": verification_reports.NOTHING_TO_SIGN}, response_only=True, status_codes=["409"],
    ),
    OpenApiExample(
        "A role other than clinic staff",
        value={"detail": "Your role does not give access to this resource."}, response_only=True, status_codes=["403"],
    ),
    OpenApiExample(
        "A read-only token writing",
        value={"detail": "This API token is read-only: it cannot change anything. Use a read-write token."},
        response_only=True, status_codes=["403"],
    ),
]


class CaseReportStateApi(ClinicApi):
    """GET the report's state: draft or signed, every signed version with its PDF link, and
    whether signing now would make a new version (clinic staff)."""

    @extend_schema(
        summary="The examination report: its signed versions and whether it is a draft",
        responses={200: ReportOutput, **error_responses(404)}, examples=[REPORT_EXAMPLE],
    )
    def get(self, request: Request, pk: int) -> Response:
        case = selectors.case_get(user=request.user, case_id=pk)
        state = verification_reports.report_state(case=case, user=request.user)
        versions = list(verification_reports.report_versions(case=case))
        current = state.latest if state.current else None
        context = {"request": request, "current_version_id": current.pk if current else None}
        return Response(
            {
                "case": case.pk,
                "status": state.status,
                "current_version": current.number if current else None,
                "may_sign": state.signable,
                "pdf_url": api_reverse("cases-api:case_report", request=request, args=[case.pk]),
                "sign_url": api_reverse("cases-api:case_report_sign", request=request, args=[case.pk]),
                "versions": ReportVersionOutput(versions, many=True, context=context).data,
            }
        )


class CaseReportSignApi(ClinicApi):
    """POST (no body): sign the report as it reads now, as the page's button does; the
    stored PDF becomes the next version and the ``report.signed`` webhook follows."""

    @extend_schema(
        summary="Sign the examination report (the next version)", request=None,
        responses={201: ReportVersionOutput, **error_responses(404, 409)},
        examples=[SIGNED_EXAMPLE, *SIGN_REFUSALS],
    )
    def post(self, request: Request, pk: int) -> Response:
        case = selectors.case_get(user=request.user, case_id=pk)
        version = verification_reports.report_sign(case=case, user=request.user)
        context = {"request": request, "current_version_id": version.pk}
        return Response(ReportVersionOutput(version, context=context).data, status=status.HTTP_201_CREATED)


def _pdf(version: Any, name: str) -> HttpResponse:
    with version.pdf.open("rb") as handle:
        return _pdf_bytes(handle.read(), name)


def _pdf_bytes(data: bytes, name: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
