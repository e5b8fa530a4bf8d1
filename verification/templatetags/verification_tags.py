"""Template tags: the verification panel on the clinic's scan page, a volume's verification."""
from __future__ import annotations

from typing import Any

from django import template

from cases.diagnoses import Diagnosis
from cases.models import Volume

from .. import blinding, selectors
from ..models import ExclusionReason, Review, is_volume_unit, review_unit_of

register = template.Library()


@register.inclusion_tag("verification/_panel.html", takes_context=True)
def verification_panel(context: dict[str, Any], scan: Any) -> dict[str, Any]:
    """Verification stage, final label and the grades this user may see (``verification.blinding``)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if scan is None or user is None or not user.is_authenticated:
        return {"visible": False}
    state = selectors.review_state(user=user, scan=scan)
    review, reference = state["review"], state["reference"]
    prediction = reference.prediction if reference is not None else None
    model_differs = bool(
        review.stage == Review.Stage.VERIFIED
        and prediction is not None
        and prediction.gate_passed
        and prediction.predicted != review.final_label
    )
    unit = review_unit_of(scan)
    volume_state = selectors.volume_review_state(user=user, volume=unit) if isinstance(unit, Volume) else None
    return {
        "volume_unit": unit if volume_state else None,
        "volume_state": volume_state,
        "model_differs": model_differs,
        "model_prediction": prediction,
        "visible": True,
        "scan": scan,
        "user": user,
        "is_admin": context.get("is_admin", False),
        "tiers_for_user": [t for t in (1, 2, 3) if selectors.may_act_in_tier(user, t)],
        **state,
    }


@register.inclusion_tag("verification/_volume_status.html", takes_context=True)
def volume_verification(context: dict[str, Any], volume: Volume) -> dict[str, Any]:
    """``{% volume_verification volume %}``: where the eye of a volume (graded as one unit)
    stands in verification, its verified label where the user may see it (``blinding``)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not is_volume_unit(volume):
        return {"visible": False}
    review = selectors.review_get(volume=volume)
    return {
        "visible": True,
        "volume": volume,
        "review": review,
        "may_see_label": blinding.may_see_reading(user=user, volume=volume),
        "tiers_for_user": [t for t in (1, 2, 3) if selectors.may_act_in_tier(user, t)],
    }


@register.simple_tag(takes_context=True)
def scan_name(context: dict[str, Any], scan: Any) -> str:
    """``{% scan_name scan %}``: the file name for clinic staff, the neutral scan code for graders."""
    request = context.get("request")
    return blinding.scan_display_name(user=getattr(request, "user", None), scan=scan)


_VERIFIED_CACHE = "_verification_verified_by_case"


@register.simple_tag(takes_context=True)
def scan_verified(context: dict[str, Any], scan: Any) -> Review | None:
    """``{% scan_verified scan as v %}``: the scan's verified review if the user may see its
    label (``verification.blinding``), else None. Loads every scan of the case at once."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or user is None:
        return None
    cache = getattr(request, _VERIFIED_CACHE, None)
    if cache is None:
        cache = {}
        setattr(request, _VERIFIED_CACHE, cache)
    if scan.case_id not in cache:
        ids = list(scan.case.scans.values_list("pk", flat=True))
        visible = blinding.reading_visible_ids(user=user, scan_ids=ids)
        reviews = selectors.verified_reviews_by_scan(scan_ids=ids)
        cache[scan.case_id] = {pk: r for pk, r in reviews.items() if pk in visible}
    return cache[scan.case_id].get(scan.pk)


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@register.filter
def num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@register.filter
def exclusion_label(value: str) -> str:
    return dict(ExclusionReason.choices).get(value, value)


@register.filter
def stage_label(value: str) -> str:
    return dict(Review.Stage.choices).get(value, value)


_REFERENCES_ATTR = "_verification_reference_examples"


@register.simple_tag(takes_context=True)
def reference_examples_for(context: dict[str, Any], scan: Any = None) -> dict[str, Any]:
    """``{% reference_examples_for scan as refs %}``: verified examples of each class for the
    viewer's side-by-side comparison (``selectors.reference_examples``), ``scan`` itself and
    its own volume left out; those queries run once per request however many viewers the
    page has."""
    request = context.get("request")
    user = getattr(request, "user", None)
    cached = getattr(request, _REFERENCES_ATTR, None)
    if cached is None:
        per_class = selectors.REFERENCE_PER_CLASS
        cached = selectors.reference_examples(user=user, per_class=per_class + 1) if user is not None else {}
        if request is not None:
            setattr(request, _REFERENCES_ATTR, cached)
    skip, skip_volume = getattr(scan, "pk", None), getattr(scan, "volume_id", None)
    groups = [
        {
            "code": code,
            "label": Diagnosis(code).label,
            "reviews": [
                r for r in reviews if r.example.pk != skip and (skip_volume is None or r.volume_id != skip_volume)
            ][: selectors.REFERENCE_PER_CLASS],
        }
        for code, reviews in cached.items()
    ]
    return {"groups": groups, "any": any(g["reviews"] for g in groups)}
