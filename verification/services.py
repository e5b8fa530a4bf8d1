"""Write-side services of tiered verification.

A review unit is a scan or a whole volume (``models.review_unit_of``): each service
takes ``scan=`` or ``volume=``. Every state transition runs inside
``transaction.atomic()`` with the unit's ``Review`` row locked (``select_for_update``), so two graders racing for the last
tier 2 slot, or a correction racing a verification, are serialised by the database.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from cases.diagnoses import Diagnosis
from cases.models import Scan, Volume
from octportal.errors import Conflict, DomainError, Forbidden

from .models import ExclusionReason, Grade, Review, Tier, review_unit_of, unit_filter, unit_kind
from .selectors import WORKLIST_STAGES, may_act_in_tier

FINDING_FIELDS = {
    "cnv": "finding_cnv",
    "macular_edema": "finding_macular_edema",
    "drusen": "finding_drusen",
    "other": "finding_other",
}


Unit = Scan | Volume


def _noun(unit: Unit) -> str:
    return unit_kind(unit).label.lower() if isinstance(unit, Volume) else "scan"


def review_open(*, scan: Scan | None = None, volume: Volume | None = None) -> Review:
    """Open the review of a unit at quality control (when it is submitted); idempotent.

    A B-scan of a volume of more than one B-scan opens (or finds) its volume's review,
    so a volume gets one review however many B-scans it has.
    """
    if (scan is None) == (volume is None):
        raise ValueError("Open the review of a scan or of a volume.")
    unit: Unit = review_unit_of(scan) if scan is not None else volume
    review, _ = Review.objects.get_or_create(
        **{unit_kind(unit).value: unit},
        defaults={"stage": Review.Stage.QUALITY_CONTROL, "required_grades": settings.VERIFICATION_REQUIRED_GRADES},
    )
    # Onto every B-scan of a volume unit that lacks it (those submitted with this one, or
    # after it), or onto the lone scan.
    review_copy(review)
    return review


def review_copy(review: Review) -> None:
    """Copy where ``review`` stands onto its scans (``Scan.review_stage``, and
    ``Scan.review_label`` once verified): every B-scan of a volume unit, or the lone scan.
    The one place those copies are written: after every change of stage or final label
    here, and after any change made to reviews outside these services (a data fix)."""
    scans = Scan.objects.filter(volume_id=review.volume_id) if review.volume_id else Scan.objects.filter(pk=review.scan_id)
    label = review.final_label if review.stage == Review.Stage.VERIFIED else ""
    scans.exclude(review_stage=review.stage, review_label=label).update(review_stage=review.stage, review_label=label)


def _unit(scan: Scan | None, volume: Volume | None) -> Unit:
    """The unit a grade is submitted on; a B-scan of a volume unit is refused."""
    if (scan is None) == (volume is None):
        raise DomainError("Grade a scan or a volume.")
    if volume is not None:
        return volume
    unit = review_unit_of(scan)
    if isinstance(unit, Volume):
        raise Conflict(
            f"Scan {scan.pk} is a B-scan of volume {unit.pk}, which is graded as one: grade the volume."
        )
    return scan


def _lock_review(unit: Unit) -> Review:
    # A review created here is not copied onto its scans: every caller either raises (its
    # transaction rolls the new review back) or changes its stage, which copies it.
    Review.objects.get_or_create(
        **{unit_kind(unit).value: unit},
        defaults={"stage": Review.Stage.QUALITY_CONTROL, "required_grades": settings.VERIFICATION_REQUIRED_GRADES},
    )
    return Review.objects.select_for_update().get(**unit_filter(unit))


def _time_ms(time_taken: int | float | timedelta | None) -> int | None:
    if time_taken is None or time_taken == "":
        return None
    if isinstance(time_taken, timedelta):
        return int(time_taken.total_seconds() * 1000)
    try:
        value = int(float(time_taken))
    except (TypeError, ValueError) as exc:
        raise DomainError("Time taken must be a number of milliseconds.") from exc
    # A page left open overnight is not grading time; cap at one hour.
    return max(0, min(value, 3_600_000))


def _set_stage(review: Review, stage: str, **fields: Any) -> None:
    review.stage = stage
    review.stage_changed_at = timezone.now()
    for name, value in fields.items():
        setattr(review, name, value)
    review.save()
    review_copy(review)


def _check_may_act(*, review: Review, grader: Any, tier: int) -> None:
    if not may_act_in_tier(grader, tier):
        raise Forbidden(f"Your role does not allow grading in tier {tier}.")
    noun = _noun(review.unit)
    acted = set(Grade.objects.filter(**unit_filter(review.unit), grader=grader).values_list("tier", flat=True))
    if tier in acted:
        raise Conflict(
            f"You have already graded this {noun} in tier {tier}; correct your grade instead of grading it again."
        )
    if acted:
        other = ", ".join(str(t) for t in sorted(acted))
        raise Forbidden(
            f"You already acted on this {noun} in tier {other}; a grader may act in only one tier per {noun}."
        )
    if review.stage not in WORKLIST_STAGES[tier]:
        raise Conflict(
            f"This {noun} is at the '{review.get_stage_display()}' stage; tier {tier} cannot grade it now."
        )


def _save_grade(grade: Grade) -> Grade:
    """Validate and store a new grade (grades are never edited after this)."""
    try:
        grade.full_clean()
    except ValidationError as exc:
        raise DomainError("The grade is not valid.", errors=exc.message_dict) from exc
    grade.save()
    return grade


def _label(value: str, *, field: str = "label") -> str:
    if value not in Diagnosis.values:
        raise DomainError(f"Choose a {field}: one of {', '.join(Diagnosis.values)}.")
    return value


def _tier1_fields(accept: bool, reason: str) -> dict[str, Any]:
    if accept:
        return {"accepted": True, "exclusion_reason": ""}
    if reason not in ExclusionReason.values:
        raise DomainError("Choose why the scan is excluded.")
    return {"accepted": False, "exclusion_reason": reason}


def _tier2_fields(label: str, findings: dict[str, bool] | None, confidence: int | None) -> dict[str, Any]:
    findings = findings or {}
    unknown = set(findings) - set(FINDING_FIELDS)
    if unknown:
        raise DomainError(f"Unknown findings: {', '.join(sorted(unknown))}.")
    try:
        conf = int(confidence) if confidence is not None else 0
    except (TypeError, ValueError):
        conf = 0
    if not 1 <= conf <= 5:
        raise DomainError("Confidence must be between 1 (unsure) and 5 (certain).")
    out: dict[str, Any] = {"label": _label(label), "confidence": conf}
    for key, field in FINDING_FIELDS.items():
        out[field] = bool(findings.get(key, False))
    return out


def _key_slices(unit: Unit, key_slices: list[int] | None) -> list[int]:
    """Validate a tier 2 grade's key B-scans: 0-based indices inside the volume, sorted, once each."""
    if not key_slices:
        return []
    if not isinstance(unit, Volume):
        raise DomainError("Key B-scans are marked on volumes only.", errors={"key_slices": ["Only for a volume."]})
    if not isinstance(key_slices, (list, tuple)) or any(
        isinstance(i, bool) or not isinstance(i, int) for i in key_slices
    ):
        raise DomainError("Key B-scans are slice indices (whole numbers).", errors={"key_slices": ["Whole numbers."]})
    outside = sorted({i for i in key_slices if not 0 <= i < unit.slice_count})
    if outside:
        message = f"Key B-scans must be between 0 and {unit.slice_count - 1} (this volume's slices): not {outside}."
        raise DomainError(message, errors={"key_slices": [message]})
    return sorted(set(key_slices))


def _apply_tier1(review: Review, grade: Grade) -> None:
    if grade.accepted:
        _set_stage(review, Review.Stage.GRADING, exclusion_reason="")
    else:
        _set_stage(review, Review.Stage.EXCLUDED, exclusion_reason=grade.exclusion_reason)


def _apply_tier2(review: Review) -> None:
    labels = list(
        Grade.objects.current().filter(**unit_filter(review.unit), tier=Tier.GRADING).values_list("label", flat=True)
    )
    if len(labels) < review.required_grades:
        stage = Review.Stage.GRADING
    elif len(set(labels)) == 1:
        stage = Review.Stage.VERIFICATION
    else:
        stage = Review.Stage.ARBITRATION
    if stage != review.stage:
        _set_stage(review, stage)


def _apply_tier3(review: Review, grade: Grade) -> None:
    _set_stage(
        review,
        Review.Stage.VERIFIED,
        final_label=grade.label,
        verified_by=grade.grader,
        verified_at=grade.created_at,
    )


def quality_submit(
    *,
    scan: Scan | None = None,
    volume: Volume | None = None,
    grader: Any,
    accept: bool,
    reason: str = "",
    comment: str = "",
    time_taken: int | timedelta | None = None,
) -> Grade:
    """Record a tier 1 quality decision on a scan or a whole volume: accept into grading
    or exclude with a reason."""
    fields = _tier1_fields(accept, reason)
    unit = _unit(scan, volume)
    with transaction.atomic():
        review = _lock_review(unit)
        _check_may_act(review=review, grader=grader, tier=Tier.QUALITY)
        grade = _save_grade(
            Grade(**{unit_kind(unit).value: unit}, tier=Tier.QUALITY, grader=grader, comment=comment,
                  time_taken_ms=_time_ms(time_taken), **fields)
        )
        _apply_tier1(review, grade)
    return grade


def grade_submit(
    *,
    scan: Scan | None = None,
    volume: Volume | None = None,
    grader: Any,
    label: str,
    findings: dict[str, bool] | None = None,
    confidence: int | None = None,
    comment: str = "",
    time_taken: int | timedelta | None = None,
    reference_label: str = "",
    key_slices: list[int] | None = None,
) -> Grade:
    """Record an independent tier 2 grade of a scan, or of the eye of a volume (which may
    name key B-scans by 0-based index); the last required grade moves the unit on to
    verification (all agree) or arbitration (they disagree)."""
    fields = _tier2_fields(label, findings, confidence)
    unit = _unit(scan, volume)
    keys = _key_slices(unit, key_slices)
    with transaction.atomic():
        review = _lock_review(unit)
        _check_may_act(review=review, grader=grader, tier=Tier.GRADING)
        have = Grade.objects.current().filter(**unit_filter(unit), tier=Tier.GRADING).count()
        if have >= review.required_grades:
            raise Conflict(
                f"This {_noun(unit)} already has the {review.required_grades} independent grades it needs; "
                "take the next one."
            )
        grade = _save_grade(
            Grade(**{unit_kind(unit).value: unit}, tier=Tier.GRADING, grader=grader, comment=comment,
                  time_taken_ms=_time_ms(time_taken), reference_label=reference_label or "", key_slices=keys,
                  **fields)
        )
        _apply_tier2(review)
    return grade


def verify_submit(
    *,
    scan: Scan | None = None,
    volume: Volume | None = None,
    grader: Any,
    final_label: str,
    note: str = "",
    time_taken: int | timedelta | None = None,
    reference_label: str = "",
) -> Grade:
    """Record the tier 3 final label of a scan or an eye (verification or arbitration)
    and close the review."""
    _label(final_label, field="final label")
    unit = _unit(scan, volume)
    with transaction.atomic():
        review = _lock_review(unit)
        _check_may_act(review=review, grader=grader, tier=Tier.VERIFICATION)
        grade = _save_grade(
            Grade(**{unit_kind(unit).value: unit}, tier=Tier.VERIFICATION, grader=grader, label=final_label,
                  comment=note, time_taken_ms=_time_ms(time_taken), reference_label=reference_label or "")
        )
        _apply_tier3(review, grade)
    return grade


def reference_pick_set(*, scan: Scan, user: Any, picked: bool) -> Review:
    """Choose (or stop choosing) a verified scan as a reference example of its final class:
    tier 3 graders and admins, verified reviews only. Audited like every Review change."""
    if not may_act_in_tier(user, Tier.VERIFICATION):
        raise Forbidden("Only tier 3 graders choose reference examples.")
    with transaction.atomic():
        review = _lock_review(_unit(scan, None))
        if review.stage != Review.Stage.VERIFIED:
            raise Conflict("Only a verified scan can be a reference example.")
        if review.reference_pick != picked:
            review.reference_pick = picked
            review.save(update_fields=["reference_pick"])
    return review


def grade_correct(
    *,
    grade: Grade,
    grader: Any,
    accept: bool | None = None,
    reason: str = "",
    label: str = "",
    findings: dict[str, bool] | None = None,
    confidence: int | None = None,
    comment: str = "",
    time_taken: int | timedelta | None = None,
    key_slices: list[int] | None = None,
) -> Grade:
    """Correct one's own current grade with a new grade that supersedes it (both kept).

    Tier 1 may be corrected until tier 2 grading has begun, tier 2 until the unit is
    verified, tier 3 at any time after (the final label follows the correction). A
    tier 2 correction of a volume's grade gives its key B-scans anew.
    """
    unit = grade.unit
    keys = _key_slices(unit, key_slices) if grade.tier == Tier.GRADING else []
    if grade.tier == Tier.QUALITY:
        if accept is None:
            raise DomainError("Say whether the scan is accepted or excluded.")
        fields = _tier1_fields(bool(accept), reason)
    elif grade.tier == Tier.GRADING:
        fields = _tier2_fields(label, findings, confidence)
    else:
        fields = {"label": _label(label, field="final label")}
    with transaction.atomic():
        review = _lock_review(unit)
        noun = _noun(unit)
        if grade.grader_id != grader.pk:
            raise Forbidden("You can correct only your own grades.")
        if not may_act_in_tier(grader, grade.tier):
            raise Forbidden(f"Your role does not allow grading in tier {grade.tier}.")
        if Grade.objects.filter(supersedes=grade).exists():
            raise Conflict("This grade has already been corrected; correct the latest version instead.")
        stage = review.stage
        if grade.tier == Tier.QUALITY:
            tier2_started = Grade.objects.filter(**unit_filter(unit), tier=Tier.GRADING).exists()
            if stage not in (Review.Stage.GRADING, Review.Stage.EXCLUDED) or tier2_started:
                raise Conflict("Quality control can no longer be corrected: tier 2 grading has begun.")
        elif grade.tier == Tier.GRADING and stage not in (
            Review.Stage.GRADING,
            Review.Stage.VERIFICATION,
            Review.Stage.ARBITRATION,
        ):
            raise Conflict(f"Tier 2 grades can no longer be corrected once the {noun} is verified or excluded.")
        elif grade.tier == Tier.VERIFICATION and stage != Review.Stage.VERIFIED:
            raise Conflict(f"This {noun} is not verified; there is no final label to correct.")
        new = _save_grade(
            Grade(
                scan_id=grade.scan_id,
                volume_id=grade.volume_id,
                key_slices=keys,
                tier=grade.tier,
                grader=grader,
                comment=comment,
                time_taken_ms=_time_ms(time_taken),
                reference_label=grade.reference_label,
                supersedes=grade,
                **fields,
            )
        )
        if grade.tier == Tier.QUALITY:
            _apply_tier1(review, new)
        elif grade.tier == Tier.GRADING:
            _apply_tier2(review)
        else:
            _apply_tier3(review, new)
    return new
