"""HTML-side endpoints of automated reading: status polling, heatmap, re-run."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from cases import selectors as cases_selectors
from verification import blinding

from . import selectors, services

FRAGMENTS = {"result": "inference/_scan_result.html", "row": "inference/_scan_row_result.html"}


def scan_status_payload(request: HttpRequest, scan, *, fragment: str = "result") -> dict:
    """Status of one scan, its reading when the user may see it, and the re-rendered partial."""
    analysis = selectors.scan_analysis(
        user=request.user, scan=scan, visible=blinding.may_see_reading(user=request.user, scan=scan)
    )
    payload: dict = {"id": scan.pk, "status": scan.status, "status_label": scan.get_status_display()}
    if scan.status == scan.Status.FAILED and analysis.visible:
        payload["detail"] = scan.status_detail
    if analysis.result is not None:
        p = analysis.result
        payload["prediction"] = {
            "predicted": p.predicted,
            "confidence": p.confidence,
            "urgency": p.urgency,
            "model_version": p.model_version.label,
            "quality_score": p.quality_score,
            "low_confidence": p.low_confidence,
            "quality_reasons": p.quality_reasons,
        }
    template = FRAGMENTS.get(fragment, FRAGMENTS["result"])
    payload["html"] = render_to_string(template, {"scan": scan}, request=request)
    return payload


@login_required
@require_GET
def scan_status(request: HttpRequest, pk: int) -> JsonResponse:
    """JSON for the poller: ``?fragment=row`` re-renders the case-page row instead."""
    scan = cases_selectors.scan_image_get(user=request.user, scan_id=pk)
    payload = scan_status_payload(request, scan, fragment=request.GET.get("fragment", "result"))
    response = JsonResponse(payload)
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def case_status(request: HttpRequest, pk: int) -> JsonResponse:
    """JSON for the poller on the case page: each scan's status and the summary partial."""
    case = cases_selectors.case_get(user=request.user, case_id=pk)
    scans = list(case.scans.all())
    response = JsonResponse(
        {
            "id": case.pk,
            "scans": [{"id": s.pk, "status": s.status} for s in scans],
            "pending": sum(1 for s in scans if s.status in selectors.PENDING_STATUSES),
            "html": render_to_string("inference/_case_summary.html", {"case": case}, request=request),
        }
    )
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def heatmap(request: HttpRequest, pk: int) -> HttpResponse:
    """Serve the heatmap overlay PNG of a scan's current reading, with the scan image's
    permission and the blinding rule (rendered on the first request, then kept)."""
    scan = cases_selectors.scan_image_get(user=request.user, scan_id=pk)
    analysis = selectors.scan_analysis(
        user=request.user, scan=scan, visible=blinding.may_see_reading(user=request.user, scan=scan)
    )
    prediction = analysis.result
    png = services.prediction_heatmap_png(prediction=prediction, scan=scan) if prediction is not None else None
    if png is None:
        raise Http404("No heatmap for this scan.")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=0, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_POST
def scan_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    """Clinician action: queue the scan again for the active model version."""
    scan = cases_selectors.scan_image_get(user=request.user, scan_id=pk)
    services.scan_rerun(scan=scan, user=request.user)
    messages.success(request, "The scan is queued for a new automated reading.")
    return HttpResponseRedirect(_back(request, scan))


def _back(request: HttpRequest, scan) -> str:
    for candidate in (request.POST.get("next"), request.headers.get("Referer")):
        if candidate and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return candidate
    try:
        return scan.get_absolute_url()
    except NoReverseMatch:
        return "/"
