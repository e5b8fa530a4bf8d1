"""HTML views: check access, call one selector or service, render."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from auditlog.signals import accessed

from intake import services as intake_services
from intake import volumes as intake_volumes
from octportal.errors import DomainError
from verification import blinding

from . import selectors, services
from .diagnoses import CONDITIONS, DECISION_SUPPORT_NOTICE
from .forms import CaseCreateForm, CaseForm, PatientForm, PatientSearchForm
from .roles import GRADER_ROLES, Role, role_required

PATIENTS_PER_PAGE = 25


def _submitted(request: HttpRequest, form: Any, save: Callable[[dict[str, Any]], Any], success: str) -> HttpResponse | None:
    """On a valid POST, call ``save`` with the form's data and redirect to what it returns;
    a refusal becomes the form's error. None: render the form (again)."""
    if request.method != "POST" or not form.is_valid():
        return None
    try:
        obj = save(form.cleaned_data)
    except DomainError as exc:
        form.add_error(None, exc.message)
        return None
    messages.success(request, success.format(obj=obj))
    return redirect(obj)


# --- public pages ---------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "cases/home.html", {"conditions": CONDITIONS.values()})


@require_GET
def about(request: HttpRequest) -> HttpResponse:
    return render(request, "cases/about.html", {"conditions": CONDITIONS.values()})


@require_GET
def learn(request: HttpRequest, slug: str) -> HttpResponse:
    condition = CONDITIONS.get(slug)
    if condition is None:
        raise Http404("No such condition.")
    return render(
        request,
        "cases/learn.html",
        {"condition": condition, "conditions": CONDITIONS.values(), "notice": DECISION_SUPPORT_NOTICE},
    )


# --- patients -------------------------------------------------------------------------


@role_required(Role.CLINICIAN)
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    form = PatientSearchForm(request.GET or None)
    query = form.cleaned_data["q"] if form.is_valid() else ""
    patients = selectors.patient_list(user=request.user, query=query)
    page = Paginator(patients, PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "cases/patient_list.html", {"form": form, "query": query, "page": page})


@role_required(Role.CLINICIAN)
@require_http_methods(["GET", "POST"])
def patient_create(request: HttpRequest) -> HttpResponse:
    form = PatientForm(request.POST or None)
    save = lambda data: services.patient_create(created_by=request.user, **data)  # noqa: E731
    if done := _submitted(request, form, save, "Patient {obj.identifier} registered."):
        return done
    return render(request, "cases/patient_form.html", {"form": form, "patient": None})


@role_required(Role.CLINICIAN)
@require_GET
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    patient = selectors.patient_get(user=request.user, patient_id=pk)
    return render(request, "cases/patient_detail.html", {"patient": patient, "cases": patient.cases.all()})


@role_required(Role.CLINICIAN)
@require_http_methods(["GET", "POST"])
def patient_update(request: HttpRequest, pk: int) -> HttpResponse:
    patient = selectors.patient_get(user=request.user, patient_id=pk)
    form = PatientForm(request.POST or None, instance=patient)
    save = lambda data: services.patient_update(patient=patient, data=data)  # noqa: E731
    if done := _submitted(request, form, save, "Patient {obj.identifier} updated."):
        return done
    return render(request, "cases/patient_form.html", {"form": form, "patient": patient})


# --- cases ----------------------------------------------------------------------------


@role_required(Role.CLINICIAN)
@require_http_methods(["GET", "POST"])
def case_create(request: HttpRequest, patient_pk: int) -> HttpResponse:
    patient = selectors.patient_get(user=request.user, patient_id=patient_pk)
    form = CaseCreateForm(request.POST or None)
    save = lambda data: services.case_create(patient=patient, created_by=request.user, **data)  # noqa: E731
    if done := _submitted(request, form, save, "Examination created. Upload its B-scans below."):
        return done
    return render(request, "cases/case_form.html", {"form": form, "patient": patient, "case": None})


def _case_page(
    request: HttpRequest, case_id: int, *, report: intake_services.UploadReport | None = None, status: int = 200
) -> HttpResponse:
    case = selectors.case_get(user=request.user, case_id=case_id)
    context = {
        "case": case,
        "patient": case.patient,
        "scans": list(case.scans.all()),
        "volumes": list(case.volumes.order_by("uploaded_at", "id")),
        "report": report,
        "max_upload": settings.OCT_UPLOAD_MAX_BYTES,
        "max_files": settings.OCT_UPLOAD_MAX_FILES,
    }
    return render(request, "cases/case_detail.html", context, status=status)


@role_required(Role.CLINICIAN)
@require_GET
def case_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _case_page(request, pk)


@role_required(Role.CLINICIAN)
@require_http_methods(["GET", "POST"])
def case_update(request: HttpRequest, pk: int) -> HttpResponse:
    case = selectors.case_get(user=request.user, case_id=pk)
    form = CaseForm(request.POST or None, instance=case)
    save = lambda data: services.case_update(case=case, data=data)  # noqa: E731
    if done := _submitted(request, form, save, "Examination updated."):
        return done
    return render(request, "cases/case_form.html", {"form": form, "patient": case.patient, "case": case})


@role_required(Role.CLINICIAN)
@require_POST
def scan_upload(request: HttpRequest, pk: int) -> HttpResponse:
    case = selectors.case_get(user=request.user, case_id=pk)
    report = intake_volumes.uploads_submit(
        case=case, files=request.FILES.getlist("files"), uploaded_by=request.user, eye=request.POST.get("eye", "")
    )
    # Render the report right away (not a redirect): it names every file and reason.
    return _case_page(request, pk, report=report, status=200 if report.accepted else 400)


# --- scans ----------------------------------------------------------------------------


@role_required(Role.CLINICIAN)
@require_GET
def scan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scan = selectors.scan_get(user=request.user, scan_id=pk)
    context = {
        "scan": scan,
        "case": scan.case,
        "patient": scan.case.patient,
        "show_reference": blinding.may_see_reading(user=request.user, scan=scan),
    }
    return render(request, "cases/scan_detail.html", context)


@role_required(Role.CLINICIAN, *GRADER_ROLES)
@require_GET
def scan_image(request: HttpRequest, pk: int) -> FileResponse:
    """Serve a scan's grey PNG (or with ``?original=1`` the uploaded file), privately."""
    scan = selectors.scan_image_get(user=request.user, scan_id=pk)
    original = request.GET.get("original") == "1"
    field = scan.original if original else scan.image
    try:
        handle = field.open("rb")
    except FileNotFoundError:
        raise Http404("The image file of this scan is missing.") from None
    # Every look at a patient image is recorded (auditlog ACCESS entry, actor from the middleware).
    accessed.send(sender=scan.__class__, instance=scan)
    content_type = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "BMP": "image/bmp"}
    response = FileResponse(
        handle,
        content_type=content_type.get(scan.format, "application/octet-stream") if original else "image/png",
        as_attachment=original,
        filename=scan.original_name if original else f"scan-{scan.pk}.png",
    )
    response["Cache-Control"] = "private, max-age=0, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@role_required(Role.CLINICIAN, *GRADER_ROLES)
@require_GET
def volume_localizer(request: HttpRequest, pk: int) -> FileResponse:
    """Serve a volume's localizer (fundus / SLO) PNG, privately and audited like scans."""
    volume = selectors.volume_image_get(user=request.user, volume_id=pk)
    if not volume.localizer:
        raise Http404("This volume has no localizer image.")
    try:
        handle = volume.localizer.open("rb")
    except FileNotFoundError:
        raise Http404("The localizer file of this volume is missing.") from None
    accessed.send(sender=volume.__class__, instance=volume)
    response = FileResponse(handle, content_type="image/png", filename=f"volume-{volume.pk}-localizer.png")
    response["Cache-Control"] = "private, max-age=0, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
