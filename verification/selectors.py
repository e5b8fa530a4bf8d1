"""Read-side queries of tiered verification, scoped to the user.

Blinding lives here, once: every page, export and API response asks
``grades_visible_to`` and ``may_see_reference`` instead of filtering itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet

from cases.diagnoses import Urgency
from cases.models import Scan
from cases.roles import Role, user_roles

from .models import Grade, Review, Tier

WORKLIST_STAGES: dict[int, tuple[str, ...]] = {
    Tier.QUALITY: (Review.Stage.RECEIVED, Review.Stage.QUALITY_CONTROL),
    Tier.GRADING: (Review.Stage.GRADING,),
    Tier.VERIFICATION: (Review.Stage.VERIFICATION, Review.Stage.ARBITRATION),
}


def _roles(user: Any) -> frozenset[str]:
    return user_roles(user)


def sees_everything(user: Any) -> bool:
    """Tier 3 graders and admins see every grade of every scan."""
    held = _roles(user)
    return Role.ADMIN.value in held or Role.GRADER_T3.value in held


def may_act_in_tier(user: Any, tier: int) -> bool:
    """Whether the user's role lets them grade in ``tier``.

    Admins may act as tier 3 (senior verification) but not in tiers 1 and 2, so a
    superuser never silently counts as an independent tier 2 grader.
    """
    held = _roles(user)
    if tier == Tier.VERIFICATION:
        return Role.GRADER_T3.value in held or Role.ADMIN.value in held
    role = {Tier.QUALITY: Role.GRADER_T1, Tier.GRADING: Role.GRADER_T2}.get(tier)
    return role is not None and role.value in held


OPEN_FOR_TIER2 = (Review.Stage.RECEIVED, Review.Stage.QUALITY_CONTROL, Review.Stage.GRADING)


def _is_blinded_tier2(user: Any, scan: Scan) -> bool:
    """A tier 2 grader who has not yet graded this scan.

    Someone who is tier 2 *and* tier 3 (or admin) stays blinded while the scan is
    still open for tier 2 grading, since they could still grade it independently;
    after that they see everything, as tier 3 does.
    """
    held = _roles(user)
    if Role.GRADER_T2.value not in held:
        return False
    if Grade.objects.filter(scan=scan, tier=Tier.GRADING, grader=user).exists():
        return False
    if sees_everything(user):
        stage = Review.objects.filter(scan=scan).values_list("stage", flat=True).first()
        return stage is None or stage in OPEN_FOR_TIER2
    return True


def may_see_reference(*, user: Any, scan: Any) -> bool:
    """Whether ``user`` may see a scan's current label and the model's reading.

    Clinicians, admins, tier 1 and tier 3 always may. A tier 2 grader may unless
    reading-centre mode is on and they have not yet submitted their own grade on
    the scan (a tier 2 grader who also holds another role is still blinded: the
    study's independence wins).
    """
    held = _roles(user)
    if not held:
        return False
    if getattr(settings, "VERIFICATION_READING_CENTRE_MODE", False) and _is_blinded_tier2(user, scan):
        return False
    return True


def grades_visible_to(*, user: Any, scan: Scan, include_superseded: bool = False) -> QuerySet[Grade]:
    """Grades of ``scan`` the user may see.

    Tier 3 and admins see all of them. A tier 2 grader sees no tier 2 or tier 3
    grade of others until their own tier 2 grade on the scan is in (someone who is
    both tier 2 and tier 3 only while the scan is open for tier 2). Users without a
    role see none.
    """
    qs = Grade.objects.filter(scan=scan).select_related("grader", "supersedes").order_by("tier", "created_at", "id")
    if not include_superseded:
        qs = qs.current()
    held = _roles(user)
    if not held:
        return qs.none()
    if _is_blinded_tier2(user, scan):
        return qs.filter(Q(tier=Tier.QUALITY) | Q(grader=user))
    return qs


def latest_prediction(scan: Scan) -> Any | None:
    """The latest prediction of the active model version for ``scan``, or None."""
    from inference.models import Prediction

    return (
        Prediction.objects.filter(scan=scan, model_version__is_active=True)
        .select_related("model_version")
        .order_by("-created_at", "-id")
        .first()
    )


def active_predictions_by_scan(scan_ids: list[int]) -> dict[int, Any]:
    """Latest active-version prediction per scan id, in one query."""
    from inference.models import Prediction

    out: dict[int, Any] = {}
    rows = (
        Prediction.objects.filter(scan_id__in=scan_ids, model_version__is_active=True)
        .select_related("model_version")
        .order_by("scan_id", "-created_at", "-id")
    )
    for p in rows:
        out.setdefault(p.scan_id, p)
    return out


@dataclass(frozen=True)
class Reference:
    """The label a grader is asked to confirm or correct."""

    label: str  # blank when there is nothing to verify against
    origin: str  # "source" | "model" | ""
    origin_detail: str
    prediction: Any | None


def reference_for(*, scan: Scan) -> Reference:
    """The scan's current label: its source label if set, else the model's prediction.

    Callers must check ``may_see_reference`` before showing it.
    """
    prediction = latest_prediction(scan)
    if scan.source_label:
        return Reference(scan.source_label, "source", scan.source_label_origin, prediction)
    if prediction is not None and prediction.gate_passed and prediction.predicted:
        return Reference(prediction.predicted, "model", prediction.model_version.label, prediction)
    return Reference("", "", "", prediction)


def review_of(*, scan: Scan) -> Review:
    """The scan's review, created lazily (scans registered before verification existed)."""
    from .services import review_for

    return review_for(scan=scan)


def worklist_for(*, user: Any, tier: int) -> QuerySet[Scan]:
    """Scans the signed-in grader may take next in ``tier``, urgent first, then oldest.

    Excludes scans the grader already acted on in any tier and, for tier 2, scans
    whose required number of independent grades is already in.
    """
    from inference.models import Prediction

    from .services import reviews_ensure

    if not may_act_in_tier(user, tier):
        return Scan.objects.none()
    reviews_ensure()
    urgent = Prediction.objects.filter(
        scan=OuterRef("pk"), model_version__is_active=True, urgency=Urgency.URGENT
    )
    qs = (
        Scan.objects.filter(review__stage__in=WORKLIST_STAGES[tier])
        .exclude(grades__grader=user)
        .annotate(model_urgent=Exists(urgent))
        .select_related("review", "case", "case__patient")
    )
    if tier == Tier.GRADING:
        qs = qs.annotate(
            tier2_count=Count(
                "grades",
                filter=Q(grades__tier=Tier.GRADING, grades__superseded_by__isnull=True),
                distinct=True,
            )
        ).filter(tier2_count__lt=F("review__required_grades"))
    return qs.order_by("-model_urgent", "uploaded_at", "id")


def next_in_worklist(*, user: Any, tier: int, after: Scan | None = None) -> Scan | None:
    """The first scan of the grader's worklist (other than ``after``)."""
    qs = worklist_for(user=user, tier=tier)
    if after is not None:
        qs = qs.exclude(pk=after.pk)
    return qs.first()


def review_state(*, user: Any, scan: Scan) -> dict[str, Any]:
    """Everything a page or API response shows about a scan's verification, blinded for ``user``."""
    review = review_of(scan=scan)
    see_ref = may_see_reference(user=user, scan=scan)
    reference = reference_for(scan=scan) if see_ref else None
    return {
        "review": review,
        "grades": list(grades_visible_to(user=user, scan=scan)),
        "may_see_reference": see_ref,
        "reference": reference,
    }


def statistics_rows() -> dict[str, Any]:
    """Raw, ORM-free rows the statistics page feeds to ``statistics``: current grades,
    final labels, source labels and active-version predictions."""
    grades = list(
        Grade.objects.current()
        .select_related("grader")
        .values("scan_id", "tier", "grader_id", "grader__username", "label", "accepted", "exclusion_reason", "time_taken_ms")
    )
    reviews = list(Review.objects.values("scan_id", "stage", "final_label"))
    sources = dict(Scan.objects.exclude(source_label="").values_list("id", "source_label"))
    from inference.models import Prediction

    # Latest reading of the active version per scan; no IN list, so it scales to big imports.
    predictions: dict[int, str] = {}
    rows = (
        Prediction.objects.filter(model_version__is_active=True)
        .order_by("scan_id", "-created_at", "-id")
        .values_list("scan_id", "predicted", "gate_passed")
    )
    for scan_id, predicted, gate_passed in rows.iterator(chunk_size=5000):
        if scan_id not in predictions:
            predictions[scan_id] = predicted if gate_passed else ""
    predictions = {k: v for k, v in predictions.items() if v}
    return {"grades": grades, "reviews": reviews, "sources": sources, "predictions": predictions}


def verified_reviews() -> QuerySet[Review]:
    """Verified reviews with their scan, case and patient, oldest scan first."""
    return (
        Review.objects.filter(stage=Review.Stage.VERIFIED)
        .select_related("scan", "scan__case", "scan__case__patient", "verified_by")
        .order_by("scan__uploaded_at", "scan_id")
    )


def audit_entries_for(*, scan: Scan) -> QuerySet[Any]:
    """Audit log entries of a scan, its review and its grades, newest first (admins only)."""
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    types = ContentType.objects.get_for_models(Scan, Review, Grade)
    grade_ids = [str(pk) for pk in Grade.objects.filter(scan=scan).values_list("pk", flat=True)]
    review_ids = [str(pk) for pk in Review.objects.filter(scan=scan).values_list("pk", flat=True)]
    return (
        LogEntry.objects.filter(
            Q(content_type=types[Scan], object_pk=str(scan.pk))
            | Q(content_type=types[Review], object_pk__in=review_ids)
            | Q(content_type=types[Grade], object_pk__in=grade_ids)
        )
        .select_related("actor", "content_type")
        .order_by("-timestamp", "-id")
    )


def grades_visible_by_scan(*, user: Any, scans: list[Scan]) -> dict[int, list[Grade]]:
    """``grades_visible_to`` (superseded grades included) for many scans, batched for
    the users who see everything and per scan for everyone else."""
    out: dict[int, list[Grade]] = {s.pk: [] for s in scans}
    if sees_everything(user) and Role.GRADER_T2.value not in _roles(user):
        rows = (
            Grade.objects.filter(scan__in=scans)
            .select_related("grader")
            .order_by("scan_id", "tier", "created_at", "id")
        )
        for g in rows:
            out[g.scan_id].append(g)
        return out
    for s in scans:
        out[s.pk] = list(grades_visible_to(user=user, scan=s, include_superseded=True))
    return out


def reference_visible_ids(*, user: Any, scan_ids: list[int]) -> set[int]:
    """``may_see_reference`` for many scans in one query (for list pages)."""
    held = _roles(user)
    if not held:
        return set()
    ids = set(scan_ids)
    if not (getattr(settings, "VERIFICATION_READING_CENTRE_MODE", False) and Role.GRADER_T2.value in held):
        return ids
    graded = set(
        Grade.objects.filter(scan_id__in=ids, tier=Tier.GRADING, grader=user).values_list("scan_id", flat=True)
    )
    if sees_everything(user):
        closed = set(
            Review.objects.filter(scan_id__in=ids).exclude(stage__in=OPEN_FOR_TIER2).values_list("scan_id", flat=True)
        )
        return ids & (graded | closed)
    return ids & graded
