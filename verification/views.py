"""HTML views of tiered verification: thin wrappers around selectors and services."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from cases.diagnoses import Diagnosis
from cases.models import Scan, Volume
from cases.roles import GRADER_ROLES, Role, has_role, role_required
from inference import selectors as inference_selectors
from octportal.paging import CappedPaginator

from . import blinding, exports, selectors, services
from .audit import audit_rows
from .filters import ExploreFilter
from .forms import correction_kwargs, form_for
from .models import Grade, Tier, is_volume_unit, review_unit_of, unit_filter

SUBMIT = {
    Tier.QUALITY: services.quality_submit,
    Tier.GRADING: services.grade_submit,
    Tier.VERIFICATION: services.verify_submit,
}


def _require_tier(request: HttpRequest, tier: int) -> None:
    if tier not in SUBMIT or not selectors.may_act_in_tier(request.user, tier):
        raise PermissionDenied(f"Your role does not give access to the tier {tier} worklist.")


@login_required
def worklist(request: HttpRequest, tier: int) -> HttpResponse:
    _require_tier(request, tier)
    rejected = tier == Tier.QUALITY and request.GET.get("rejected") == "1"
    scans = selectors.worklist_for(user=request.user, tier=tier, include_gate_rejected=rejected)
    page = CappedPaginator(scans, 50).get_page(request.GET.get("page"))
    volumes = selectors.volume_worklist_for(user=request.user, tier=tier, include_gate_rejected=rejected)
    context = {
        "tier": tier,
        "tier_label": Tier(tier).label,
        "page": page,
        "volume_page": CappedPaginator(volumes, 50).get_page(request.GET.get("vpage")),
        "show_rejected": rejected,
        "uses_reading": blinding.worklist_uses_reading(tier=tier),
    }
    return render(request, "verification/worklist.html", context)


def _grade_redirect(unit: Scan | Volume, tier: int) -> HttpResponse:
    name = "verification:grade_volume" if isinstance(unit, Volume) else "verification:grade"
    return redirect(name, pk=unit.pk, tier=tier)


@login_required
def worklist_next(request: HttpRequest, tier: int) -> HttpResponse:
    _require_tier(request, tier)
    unit = selectors.next_in_worklist(user=request.user, tier=tier)
    if unit is None:
        messages.info(request, f"Nothing left in your tier {tier} worklist.")
        return redirect("verification:worklist", tier=tier)
    return _grade_redirect(unit, tier)


def _grade_page(request: HttpRequest, *, tier: int, unit: Scan | Volume) -> HttpResponse:
    """The grading page of a scan or a volume: show it with the tier's form; on submit,
    record the grade and go to the next unit of the worklists."""
    is_volume = isinstance(unit, Volume)
    form_class = form_for(tier, volume=is_volume)
    if is_volume:
        state = selectors.volume_review_state(user=request.user, volume=unit)
        eye = state["eye_reading"]
        shown_label = eye.diagnosis if eye else ""
        noun = "Volume"
    else:
        state = selectors.review_state(user=request.user, scan=unit)
        shown_label = state["reference"].label if state["reference"] else ""
        noun = "Scan"
    if request.method == "POST":
        form = form_class(request.POST)
        if form.is_valid():
            kwargs = form.service_kwargs()
            if tier != Tier.QUALITY:
                kwargs["reference_label"] = shown_label
            SUBMIT[tier](**{"volume" if is_volume else "scan": unit}, grader=request.user, **kwargs)
            messages.success(request, f"{noun} {unit.pk}: tier {tier} grade saved.")
            if request.POST.get("then") == "stay":
                return redirect("verification:worklist", tier=tier)
            nxt = selectors.next_in_worklist(user=request.user, tier=tier, after=unit)
            if nxt is None:
                messages.info(request, f"That was the last item in your tier {tier} worklist.")
                return redirect("verification:worklist", tier=tier)
            return _grade_redirect(nxt, tier)
    else:
        form = form_class()
    own = Grade.objects.current().filter(**unit_filter(unit), tier=tier, grader=request.user).first()
    return render(
        request,
        "verification/grade.html",
        {
            "scan": None if is_volume else unit,
            "volume": unit if is_volume else None,
            "tier": tier,
            "tier_label": Tier(tier).label,
            "form": form,
            "own_grade": own,
            "action": request.path,
            "label_keys": _label_keys(),
            "shown_label": shown_label,
            **state,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def grade(request: HttpRequest, pk: int, tier: int) -> HttpResponse:
    """A scan's grading page; a B-scan of a volume graded as one opens its volume's page."""
    _require_tier(request, tier)
    scan = get_object_or_404(Scan.objects.select_related("case", "case__patient", "volume"), pk=pk)
    unit = review_unit_of(scan)
    if isinstance(unit, Volume):
        return redirect("verification:grade_volume", pk=unit.pk, tier=tier)
    return _grade_page(request, tier=tier, unit=scan)


@login_required
@require_http_methods(["GET", "POST"])
def grade_volume(request: HttpRequest, pk: int, tier: int) -> HttpResponse:
    """A volume's grading page: its B-scans in the volume viewer, one grade for the eye."""
    _require_tier(request, tier)
    volume = get_object_or_404(Volume.objects.select_related("case", "case__patient"), pk=pk)
    if not is_volume_unit(volume):
        return redirect("verification:grade", pk=volume.scans.get().pk, tier=tier)
    return _grade_page(request, tier=tier, unit=volume)


@login_required
@require_http_methods(["POST"])
def reference_pick(request: HttpRequest, pk: int) -> HttpResponse:
    """Tier 3: choose a verified scan as a reference example of its class, or stop."""
    _require_tier(request, Tier.VERIFICATION)
    scan = get_object_or_404(Scan, pk=pk)
    picked = request.POST.get("picked") == "1"
    services.reference_pick_set(scan=scan, user=request.user, picked=picked)
    messages.success(request, f"Scan {scan.pk} {'is now' if picked else 'is no longer'} a reference example.")
    return redirect("verification:grade", pk=scan.pk, tier=Tier.VERIFICATION)


@login_required
@require_http_methods(["GET", "POST"])
def grade_correct(request: HttpRequest, grade_id: int) -> HttpResponse:
    """Correct one's own grade with a superseding one."""
    original = get_object_or_404(Grade.objects.select_related("scan", "volume"), pk=grade_id, grader=request.user)
    tier = original.tier
    _require_tier(request, tier)
    volume = original.volume
    form_class = form_for(tier, volume=volume is not None)
    if request.method == "POST":
        form = form_class(request.POST)
        if form.is_valid():
            services.grade_correct(grade=original, grader=request.user, **correction_kwargs(form))
            noun = f"Volume {volume.pk}" if volume else f"Scan {original.scan_id}"
            messages.success(request, f"{noun}: your tier {tier} grade was corrected (the original is kept).")
            return _grade_redirect(original.unit, tier)
    else:
        form = form_class(initial=_initial_from(original))
    if volume is not None:
        state = selectors.volume_review_state(user=request.user, volume=volume)
    else:
        state = selectors.review_state(user=request.user, scan=original.scan)
    return render(
        request,
        "verification/grade.html",
        {
            "scan": original.scan,
            "volume": volume,
            "tier": tier,
            "tier_label": Tier(tier).label,
            "form": form,
            "correcting": original,
            "action": request.path,
            "label_keys": _label_keys(),
            **state,
        },
    )


def _initial_from(g: Grade) -> dict[str, Any]:
    if g.tier == Tier.QUALITY:
        return {"decision": "accept" if g.accepted else "exclude", "reason": g.exclusion_reason}
    initial: dict[str, Any] = {"label": g.label, "confidence": g.confidence or 4}
    initial.update({k: bool(v) for k, v in g.findings.items()})
    if g.volume_id:
        initial["key_bscans"] = ", ".join(str(i + 1) for i in g.key_slices)
    return initial


def _label_keys() -> list[dict[str, str]]:
    keys = {"CNV": ("1", "C"), "DME": ("2", "D"), "DRUSEN": ("3", "R"), "NORMAL": ("4", "N")}
    return [{"value": d.value, "label": d.label, "digit": keys[d.value][0], "letter": keys[d.value][1]} for d in Diagnosis]


@role_required(Role.GRADER_T3)
def statistics(request: HttpRequest) -> HttpResponse:
    snapshot = selectors.statistics_snapshot(labels=list(Diagnosis.values), fresh=request.GET.get("fresh") == "1")
    context = {
        "report": snapshot.report,
        "volume_report": snapshot.by_unit["volume"],
        "computed_at": snapshot.computed_at,
        "max_age_min": settings.VERIFICATION_STATISTICS_MAX_AGE_S // 60,
        "labels": list(Diagnosis.values),
    }
    return render(request, "verification/statistics.html", context)


def _download(stream: Any, *, content_type: str, name: str, extension: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.{extension}"'
    return response


@role_required(Role.GRADER_T3)
def export_csv(request: HttpRequest) -> StreamingHttpResponse:
    rows = exports.verified_csv_rows(user=request.user)
    return _download(rows, content_type="text/csv", name="verified-scans", extension="csv")


@role_required(Role.GRADER_T3)
def export_zip(request: HttpRequest) -> StreamingHttpResponse:
    chunks = exports.verified_zip_stream(user=request.user)
    return _download(chunks, content_type="application/zip", name="verified-oct", extension="zip")


@role_required(Role.ADMIN)
def scan_audit(request: HttpRequest, pk: int) -> HttpResponse:
    scan = get_object_or_404(Scan, pk=pk)
    rows = audit_rows(list(selectors.audit_entries_for(scan=scan)))
    return render(request, "verification/scan_audit.html", {"scan": scan, "rows": rows})


EXPLORE_PER_PAGE = 24


@role_required(Role.CLINICIAN, *GRADER_ROLES)
def explore(request: HttpRequest) -> HttpResponse:
    """Every scan the user may see across patients, filtered, counted per category, paged."""
    scans = ExploreFilter(request.GET or None, queryset=selectors.explore_scans(user=request.user))
    qs = scans.qs
    page = CappedPaginator(qs, EXPLORE_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    tiers = [t for t in (1, 2, 3) if selectors.may_act_in_tier(request.user, t)]
    context = {
        "filter": scans,
        "page": page,
        "counts": selectors.explore_counts(
            qs, user=request.user, sampled=scans.filters_other_tables(), filtered=scans.filters_copies()
        ),
        "versions": {v.pk: v.label for v in inference_selectors.model_version_list()},
        "query": query.urlencode(),
        "records": has_role(request.user, Role.CLINICIAN),
        "grade_tier": tiers[0] if tiers else None,
    }
    return render(request, "verification/explore.html", context)
