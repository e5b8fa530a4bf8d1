"""Template tags of automated reading, used by the partials the clinic pages include.

The partials are included once per scan (e.g. in a loop over a case's scans). To
avoid one query per scan, the first lookup loads the current reading of every
scan of that case in one query and keeps it on the request for the rest of the
rendering. What the user may see is decided by ``verification.blinding``.
"""
from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from cases.diagnoses import Urgency
from cases.models import Case, Scan, Volume

from verification import blinding

from .. import selectors

register = template.Library()

_CACHE_ATTR = "_inference_predictions_by_case"


def _predictions_for_case(context: template.Context, case_id: int) -> dict[int, Any]:
    request = context.get("request")
    cache: dict[int, dict[int, Any]] | None = getattr(request, _CACHE_ATTR, None) if request is not None else None
    if cache is None:
        cache = {}
        if request is not None:
            setattr(request, _CACHE_ATTR, cache)
    if case_id not in cache:
        cache[case_id] = selectors.predictions_current_by_scan(case_id=case_id)
    return cache[case_id]


def _user(context: template.Context) -> Any:
    request = context.get("request")
    return getattr(request, "user", None) or context.get("user")


@register.simple_tag(takes_context=True)
def scan_analysis(context: template.Context, scan: Scan) -> selectors.ScanAnalysis:
    """``{% scan_analysis scan as a %}``: the reading of ``scan`` as ``user`` may see it."""
    user = _user(context)
    prediction = _predictions_for_case(context, scan.case_id).get(scan.pk)
    visible = blinding.may_see_reading(user=user, scan=scan)
    return selectors.scan_analysis(user=user, scan=scan, visible=visible, prediction=prediction)


@register.simple_tag(takes_context=True)
def viewer_state(context: template.Context, scan: Scan) -> dict[str, Any]:
    """``{% viewer_state scan as vs %}``: what the image viewer (``cases/_viewer.html``) may
    show: the scan's display name, whether a heatmap control belongs there at all
    (``heatmap_allowed``, the blinding rule's ``may_see_reading``) and the heatmap's URL
    when the current reading has one. A blinded tier 2 grader gets neither."""
    user = _user(context)
    allowed = blinding.may_see_reading(user=user, scan=scan)
    url = ""
    if allowed:
        prediction = _predictions_for_case(context, scan.case_id).get(scan.pk)
        if prediction is not None and prediction.gate_passed and prediction.heatmap:
            url = reverse("inference:heatmap", args=[scan.pk])
    return {
        "name": blinding.scan_display_name(user=user, scan=scan),
        "heatmap_allowed": allowed,
        "heatmap_url": url,
    }


@register.simple_tag(takes_context=True)
def volume_viewer_state(context: template.Context, v: selectors.VolumeAnalysis) -> dict[str, Any]:
    """``{% volume_viewer_state v as vs %}``: the viewer's state for a volume's first slice
    (``v`` from ``volume_analysis``, already blinded: a slice's heatmap is only listed when
    its reading is visible)."""
    first = v.slices[0] if v.slices else None
    return {
        "name": f"{v.volume.laterality} volume {v.volume.pk}, current slice",
        "heatmap_allowed": any(s["p_urgent"] is not None for s in v.slices),
        "heatmap_url": reverse("inference:heatmap", args=[first["scan_id"]]) if first and first["heatmap"] else "",
        "first_src": reverse("cases:scan_image", args=[first["scan_id"]]) if first else "",
    }


@register.simple_tag(takes_context=True)
def case_analysis(context: template.Context, case: Case, scans: Any = None) -> selectors.CaseSummary:
    """``{% case_analysis case scans as s %}``: the most urgent visible finding of a case
    (``scans`` when the page already has them, else the case's scans)."""
    predictions = _predictions_for_case(context, case.pk)
    if scans is None or scans == "":
        scans = case.scans.all()
    scans = list(scans)
    visible = blinding.reading_visible_ids(user=_user(context), scan_ids=[s.pk for s in scans])
    return selectors.case_summary(scans=scans, predictions=predictions, visible_ids=visible)


@register.simple_tag(takes_context=True)
def volume_analysis(context: template.Context, volume: Volume) -> selectors.VolumeAnalysis:
    """``{% volume_analysis volume as v %}``: the per-eye reading and slice strip ``user`` may see."""
    ids = list(volume.scans.values_list("pk", flat=True))
    visible = blinding.reading_visible_ids(user=_user(context), scan_ids=ids)
    return selectors.volume_reading(volume=volume, visible_ids=visible)


@register.filter
def urgency_label(code: str) -> str:
    try:
        return Urgency(code).label
    except ValueError:
        return ""


@register.filter
def percent(value: float | None) -> str:
    """A probability as a percentage with one decimal, never "100%" nor "0%": a calibrated
    model is never certain, so the display stops at >99.9% and <0.1%."""
    if value is None:
        return ""
    pct = value * 100
    if pct > 99.95:
        return ">99.9%"
    if 0 < pct < 0.05:
        return "<0.1%"
    return f"{pct:.1f}%"
