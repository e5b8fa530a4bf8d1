"""HTML views: check access, call one selector or service, render."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.contrib.auth.decorators import login_required
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from auditlog.signals import accessed

from inference import selectors as inference_selectors
from intake import services as intake_services
from intake import volumes as intake_volumes
from octportal.errors import DomainError, Forbidden, NotFound
from octportal.paging import CappedPaginator, page_annotated
from verification import blinding
from verification import reports as verification_reports
from verification import selectors as verification_selectors

from . import selectors, services
from .thumbnails import thumbnail_png
from .diagnoses import CONDITIONS, DECISION_SUPPORT_NOTICE
from .models import Case
from .forms import AcknowledgementForm, CaseCreateForm, CaseForm, PatientForm, PatientSearchForm
from .roles import GRADER_ROLES, Role, role_required, user_roles

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
    # Verified examples are patient images: signed-in users with a role only, blinded
    # per scan (verification.selectors.reference_examples); anonymous visitors read the text.
    examples = []
    if request.user.is_authenticated:
        examples = verification_selectors.reference_examples(user=request.user)[condition.code]
    return render(
        request,
        "cases/learn.html",
        {
            "condition": condition,
            "conditions": CONDITIONS.values(),
            "notice": DECISION_SUPPORT_NOTICE,
            "examples": examples,
            "show_examples": request.user.is_authenticated and selectors.may_see_images(user=request.user),
        },
    )


# --- start pages ----------------------------------------------------------------------

# Where each role starts after signing in, first match wins (LOGIN_REDIRECT_URL).
START_PAGES: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    (Role.ADMIN, "verification:statistics", ()),
    (Role.CLINICIAN, "cases:clinic_home", ()),
    (Role.GRADER_T3, "verification:worklist", (3,)),
    (Role.GRADER_T2, "verification:worklist", (2,)),
    (Role.GRADER_T1, "verification:worklist", (1,)),
)


@login_required
@require_GET
def start(request: HttpRequest) -> HttpResponse:
    """Send a signed-in user to their role's start page (the public home without a role)."""
    held = user_roles(request.user)
    for role, url_name, args in START_PAGES:
        if role.value in held:
            return redirect(url_name, *args)
    return redirect("cases:home")


@role_required(Role.CLINICIAN)
@require_GET
def clinic_home(request: HttpRequest) -> HttpResponse:
    """The clinician's start page: urgent results no one has acknowledged yet, newest first."""
    urgent = inference_selectors.urgent_unacknowledged(user=request.user)
    page = CappedPaginator(urgent, PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
    visible = blinding.reading_visible_ids(user=request.user, scan_ids=[s.pk for s in page.object_list])
    changed = inference_selectors.changed_since_last_visit(
        user=request.user, pairs=[(s.case.patient_id, s.case.eye) for s in page.object_list]
    )
    for s in page.object_list:
        s.changed_since_last_visit = changed.get((s.case.patient_id, s.case.eye))
    context = {
        "page": page,
        "visible_ids": visible,
        "recent": inference_selectors.acknowledged_recently(user=request.user),
        "ack_form": AcknowledgementForm(),
    }
    return render(request, "cases/clinic_home.html", context)


# --- patients -------------------------------------------------------------------------


@role_required(Role.CLINICIAN)
@require_GET
def eye_followup(request: HttpRequest, pk: int, eye: str) -> HttpResponse:
    """One eye of a patient over time: each visit side by side with its reading."""
    if eye not in Case.Eye.values:
        raise Http404("No such eye.")
    patient, visits = inference_selectors.eye_followup(user=request.user, patient_id=pk, eye=eye)
    context = {"patient": patient, "eye": eye, "eye_label": Case.Eye(eye).label, "visits": visits,
               "other_eye": "OS" if eye == "OD" else "OD"}
    return render(request, "cases/eye_followup.html", context)


@role_required(Role.CLINICIAN)
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    form = PatientSearchForm(request.GET or None)
    query = form.cleaned_data["q"] if form.is_valid() else ""
    patients = selectors.patient_list(user=request.user, query=query)
    page = Paginator(patients, PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
    # The readings and counts of the 25 patients shown only, not of every patient skipped.
    page = page_annotated(page, lambda qs: inference_selectors.patients_with_readings(selectors.patients_counted(qs)))
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
    cases = inference_selectors.cases_with_readings(selectors.case_list(user=request.user, patient_id=patient.pk))
    return render(request, "cases/patient_detail.html", {"patient": patient, "cases": cases})


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
    form = CaseCreateForm(request.POST or None, initial={"exam_date": timezone.localdate()})
    save = lambda data: services.case_create(patient=patient, created_by=request.user, **data)  # noqa: E731
    if done := _submitted(request, form, save, "Examination created. Upload its B-scans below."):
        return done
    return render(request, "cases/case_form.html", {"form": form, "patient": patient, "case": None})


def _case_page(
    request: HttpRequest, case_id: int, *, report: intake_services.UploadReport | None = None, status: int = 200
) -> HttpResponse:
    case = selectors.case_get(user=request.user, case_id=case_id)
    scans = list(case.scans.all())
    # The report's scans as they are now (read in-process, a scan may already be analysed or rejected).
    fresh = {s.pk: s for s in scans}
    context = {
        "case": case,
        "patient": case.patient,
        "scans": scans,
        "report_state": verification_reports.report_state(case=case, user=request.user),
        "volumes": list(case.volumes.order_by("uploaded_at", "id")),
        "report": report,
        "report_scans": [fresh.get(s.pk, s) for s in report.accepted] if report else [],
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
@require_http_methods(["GET", "POST"])
def scan_upload(request: HttpRequest, pk: int) -> HttpResponse:
    case = selectors.case_get(user=request.user, case_id=pk)
    if request.method == "GET":
        # Reloading the address the upload report was rendered at: back to the case page.
        return redirect(case)
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
        "acknowledgements": selectors.scan_acknowledgements(user=request.user, scan=scan),
        "ack_form": AcknowledgementForm(),
    }
    return render(request, "cases/scan_detail.html", context)


@role_required(Role.CLINICIAN)
@require_POST
def scan_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    """Acknowledge a scan's result (seen, or referred to someone); back to where it was done."""
    scan = selectors.scan_get(user=request.user, scan_id=pk)
    form = AcknowledgementForm(request.POST)
    if not form.is_valid():
        raise DomainError("The acknowledgement is not valid.", errors=form.errors.get_json_data())
    ack = services.scan_acknowledge(scan=scan, user=request.user, **form.cleaned_data)
    messages.success(request, f"{scan.original_name}: {ack.summary.lower()}, recorded.")
    nxt = request.POST.get("next", "")
    if nxt and url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(nxt)
    return redirect(scan)


@role_required(Role.CLINICIAN, *GRADER_ROLES)
@require_GET
def scan_image(request: HttpRequest, pk: int) -> FileResponse:
    """Serve a scan's grey PNG (or with ``?original=1`` the uploaded file), privately."""
    scan = selectors.scan_image_get(user=request.user, scan_id=pk)
    original = request.GET.get("original") == "1"
    if original and not blinding.may_see_file_names(request.user):
        raise Forbidden("Only clinic staff can download the uploaded file; graders see the stored image.")
    field = scan.original if original else scan.image
    if not field:
        raise NotFound("This installation does not keep uploaded files; the stored image is de-identified.")
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


# A preview is a patient image: like every answer carrying patient data it is not kept
# in any cache (shared workstations), docs/security.md.
THUMBNAIL_CACHE_CONTROL = "private, max-age=0, no-store"


@role_required(Role.CLINICIAN, *GRADER_ROLES)
@require_GET
def scan_thumbnail(request: HttpRequest, pk: int) -> HttpResponse:
    """A small PNG preview of a scan, with the scan image's permission and audit entry."""
    scan = selectors.scan_image_get(user=request.user, scan_id=pk)
    try:
        data = thumbnail_png(scan.image)
    except FileNotFoundError:
        raise Http404("The image file of this scan is missing.") from None
    accessed.send(sender=scan.__class__, instance=scan)
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = THUMBNAIL_CACHE_CONTROL
    response["X-Content-Type-Options"] = "nosniff"
    response["ETag"] = f'"{scan.sha256[:32]}-t"'
    return response


# --- examination report ---------------------------------------------------------------


def _pdf(data: bytes, name: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@role_required(Role.CLINICIAN)
@require_GET
def case_report(request: HttpRequest, pk: int) -> HttpResponse:
    """The examination report as PDF: the signed version while it is current (or the one
    asked for with ``?version=N``), else a draft of what it would say now."""
    case = selectors.case_get(user=request.user, case_id=pk)
    name = f"oct-report-{case.patient.identifier}-{case.exam_date:%Y%m%d}"
    number = request.GET.get("version", "")
    if number.isdigit():
        version = case.report_versions.filter(number=int(number)).first()
        if version is None:
            raise Http404("There is no such version of this report.")
        with version.pdf.open("rb") as handle:
            return _pdf(handle.read(), f"{name}-v{version.number}.pdf")
    state = verification_reports.report_state(case=case, user=request.user)
    if state.current:
        with state.latest.pdf.open("rb") as handle:
            return _pdf(handle.read(), f"{name}-v{state.latest.number}.pdf")
    data = verification_reports.report_data(case=case, user=request.user)
    return _pdf(verification_reports.report_pdf(data=data, outdated=state.latest), f"{name}-draft.pdf")


@role_required(Role.CLINICIAN)
@require_POST
def case_report_sign(request: HttpRequest, pk: int) -> HttpResponse:
    """Sign the report as it reads now (the next version)."""
    case = selectors.case_get(user=request.user, case_id=pk)
    version = verification_reports.report_sign(case=case, user=request.user)
    messages.success(request, f"Report version {version.number} signed.")
    return redirect(case)


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
