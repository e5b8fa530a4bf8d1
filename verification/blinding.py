"""Who may see what before grading: the one home of the blinding rule.

Every page, template tag, export and API endpoint that shows a scan's current
label, the model's reading (class, probabilities, urgency, heatmap) or other
graders' grades asks this module, per scan or batched for lists.

The rule:

* users without a role see nothing;
* clinic staff, tier 1, tier 3 and admins see the current label, the reading and
  every grade;
* a tier 2 grader who has not yet submitted their tier 2 grade on a scan is
  *blinded* on it: no grade of other tier 2 or tier 3 graders, and, when
  ``VERIFICATION_READING_CENTRE_MODE`` is on, neither the current label nor the
  model's reading. Someone who is tier 2 *and* tier 3 (or admin) stays blinded while
  the scan is still open for tier 2 grading, since they could still grade it
  independently; after that they see everything, as tier 3 does;
* in reading-centre mode the tier 2 worklist is not ordered or badged by the model;
* uploaded file names and the uploaded bytes are for clinic staff (and admins)
  only: graders see a neutral scan code and the stored, de-identified image.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from cases.roles import Role, has_role, user_roles

from .models import Grade, Review, Tier

OPEN_FOR_TIER2 = (Review.Stage.RECEIVED, Review.Stage.QUALITY_CONTROL, Review.Stage.GRADING)


def sees_everything(user: Any) -> bool:
    """Tier 3 graders and admins see every grade of every scan."""
    held = user_roles(user)
    return Role.ADMIN.value in held or Role.GRADER_T3.value in held


def is_blinded_tier2(user: Any, scan: Any) -> bool:
    """Whether ``user`` is a tier 2 grader who has not yet graded ``scan``."""
    held = user_roles(user)
    if Role.GRADER_T2.value not in held:
        return False
    if Grade.objects.filter(scan=scan, tier=Tier.GRADING, grader=user).exists():
        return False
    if sees_everything(user):
        stage = Review.objects.filter(scan=scan).values_list("stage", flat=True).first()
        return stage is None or stage in OPEN_FOR_TIER2
    return True


def _blinded_tier2_ids(user: Any, scan_ids: set[int]) -> set[int]:
    """``is_blinded_tier2`` for many scans in two queries at most."""
    if Role.GRADER_T2.value not in user_roles(user) or not scan_ids:
        return set()
    graded = set(
        Grade.objects.filter(scan_id__in=scan_ids, tier=Tier.GRADING, grader=user).values_list("scan_id", flat=True)
    )
    blinded = scan_ids - graded
    if blinded and sees_everything(user):
        closed = set(
            Review.objects.filter(scan_id__in=blinded).exclude(stage__in=OPEN_FOR_TIER2).values_list("scan_id", flat=True)
        )
        blinded -= closed
    return blinded


def may_see_reading(*, user: Any, scan: Any) -> bool:
    """Whether ``user`` may see the scan's current label and the model's reading of it."""
    if not user_roles(user):
        return False
    return not (settings.VERIFICATION_READING_CENTRE_MODE and is_blinded_tier2(user, scan))


def reading_visible_ids(*, user: Any, scan_ids: Iterable[int]) -> set[int]:
    """``may_see_reading`` for many scans at once (list pages and API lists)."""
    ids = set(scan_ids)
    if not user_roles(user):
        return set()
    if not settings.VERIFICATION_READING_CENTRE_MODE:
        return ids
    return ids - _blinded_tier2_ids(user, ids)


def reading_visible_q(*, user: Any) -> Q:
    """``may_see_reading`` as a condition on scan querysets, so that lists can be filtered
    by the model's reading in SQL without revealing it to a blinded tier 2 grader."""
    held = user_roles(user)
    if not held:
        return Q(pk__in=[])
    if not settings.VERIFICATION_READING_CENTRE_MODE or Role.GRADER_T2.value not in held:
        return Q()
    graded = Q(Exists(Grade.objects.filter(scan=OuterRef("pk"), tier=Tier.GRADING, grader=user)))
    if sees_everything(user):
        return graded | (Q(review__isnull=False) & ~Q(review__stage__in=OPEN_FOR_TIER2))
    return graded


def grades_visible(*, user: Any, scan: Any, include_superseded: bool = False) -> QuerySet[Grade]:
    """Grades of ``scan`` the user may see: all of them, or, for a blinded tier 2
    grader, tier 1 grades and their own."""
    qs = Grade.objects.filter(scan=scan).select_related("grader", "supersedes").order_by("tier", "created_at", "id")
    if not include_superseded:
        qs = qs.current()
    if not user_roles(user):
        return qs.none()
    if is_blinded_tier2(user, scan):
        return qs.filter(Q(tier=Tier.QUALITY) | Q(grader=user))
    return qs


def grades_visible_by_scan(*, user: Any, scans: list[Any]) -> dict[int, list[Grade]]:
    """``grades_visible`` (superseded grades included) for many scans in two queries."""
    out: dict[int, list[Grade]] = {s.pk: [] for s in scans}
    if not user_roles(user):
        return out
    blinded = _blinded_tier2_ids(user, set(out))
    rows = Grade.objects.filter(scan__in=scans).select_related("grader").order_by("scan_id", "tier", "created_at", "id")
    for g in rows:
        if g.scan_id in blinded and g.tier != Tier.QUALITY and g.grader_id != user.pk:
            continue
        out[g.scan_id].append(g)
    return out


def may_see_file_names(user: Any) -> bool:
    """Uploaded file names (which may carry patient names or record numbers) and the
    uploaded bytes are for clinic staff and admins only."""
    return has_role(user, Role.CLINICIAN)


def scan_display_name(*, user: Any, scan: Any) -> str:
    """The scan's file name for clinic staff, its neutral code for everyone else."""
    return scan.original_name if may_see_file_names(user) else scan.code


def worklist_uses_reading(*, tier: int) -> bool:
    """Whether a tier's worklist may be ordered and badged by the model's reading:
    not tier 2 in reading-centre mode, where the order itself would tell the reading."""
    return not (tier == Tier.GRADING and settings.VERIFICATION_READING_CENTRE_MODE)
