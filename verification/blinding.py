"""Who may see what before grading: the one home of the blinding rule.

Every page, template tag, export and API endpoint that shows a scan's current
label, the model's reading (class, probabilities, urgency, heatmap) or other
graders' grades asks this module, per scan or batched for lists.

The rule:

* users without a role see nothing;
* clinic staff, tier 1, tier 3 and admins see the current label, the reading and
  every grade;
* a tier 2 grader who has not yet submitted their tier 2 grade on a review unit (a
  scan, or a volume of more than one B-scan: every B-scan of it and its per-eye
  reading follow the volume) is *blinded* on it: no grade of other tier 2 or tier 3 graders, and, when
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

from cases.models import Scan
from cases.roles import Role, has_role, user_roles

from .models import ALONE, IN_VOLUME_UNIT, Grade, Review, Tier, review_unit_of, unit_filter

OPEN_FOR_TIER2 = (Review.Stage.RECEIVED, Review.Stage.QUALITY_CONTROL, Review.Stage.GRADING)
#: Up to this many tier 2 grades of their own, ``reading_visible_q`` lists a grader's
#: graded scans from their grades; beyond, it asks per scan (bench/pages.py at 1M).
GRADED_DRIVE_MAX = 5_000


def _unit(scan: Any = None, volume: Any = None) -> Any:
    """The review unit whose grades decide what the user may see: a volume of more than
    one B-scan for each of its B-scans (graded as one eye), else the scan itself."""
    if volume is not None:
        return volume
    return review_unit_of(scan)


def sees_everything(user: Any) -> bool:
    """Tier 3 graders and admins see every grade of every unit."""
    held = user_roles(user)
    return Role.ADMIN.value in held or Role.GRADER_T3.value in held


def is_blinded_tier2(user: Any, scan: Any = None, *, volume: Any = None) -> bool:
    """Whether ``user`` is a tier 2 grader who has not yet graded the unit of ``scan``
    (the scan, or its volume) or ``volume``."""
    held = user_roles(user)
    if Role.GRADER_T2.value not in held:
        return False
    unit = _unit(scan, volume)
    if Grade.objects.filter(**unit_filter(unit), tier=Tier.GRADING, grader=user).exists():
        return False
    if sees_everything(user):
        stage = Review.objects.filter(**unit_filter(unit)).values_list("stage", flat=True).first()
        return stage is None or stage in OPEN_FOR_TIER2
    return True


def _blinded_tier2_ids(user: Any, scan_ids: set[int]) -> set[int]:
    """``is_blinded_tier2`` for many scans in four queries at most (B-scans of a volume
    unit follow their volume)."""
    if Role.GRADER_T2.value not in user_roles(user) or not scan_ids:
        return set()
    in_volume = dict(
        Scan.objects.filter(IN_VOLUME_UNIT, pk__in=scan_ids).values_list("pk", "volume_id")
    )
    singles = scan_ids - set(in_volume)
    volumes = set(in_volume.values())
    graded = set(
        Grade.objects.filter(scan_id__in=singles, tier=Tier.GRADING, grader=user).values_list("scan_id", flat=True)
    )
    graded_volumes = set(
        Grade.objects.filter(volume_id__in=volumes, tier=Tier.GRADING, grader=user).values_list("volume_id", flat=True)
    ) if volumes else set()
    blinded = (singles - graded) | {pk for pk, v in in_volume.items() if v not in graded_volumes}
    if blinded and sees_everything(user):
        reviews = Review.objects.exclude(stage__in=OPEN_FOR_TIER2).filter(
            Q(scan_id__in=blinded & singles) | Q(volume_id__in=volumes - graded_volumes)
        )
        closed_scans, closed_volumes = set(), set()
        for scan_id, volume_id in reviews.values_list("scan_id", "volume_id"):
            (closed_volumes.add(volume_id) if volume_id else closed_scans.add(scan_id))
        blinded -= closed_scans | {pk for pk, v in in_volume.items() if v in closed_volumes}
    return blinded


def may_see_reading(*, user: Any, scan: Any = None, volume: Any = None) -> bool:
    """Whether ``user`` may see the current label and the model's reading of ``scan``
    (or of every B-scan of ``volume``, and its per-eye reading)."""
    if not user_roles(user):
        return False
    return not (settings.VERIFICATION_READING_CENTRE_MODE and is_blinded_tier2(user, scan, volume=volume))


def reading_visible_ids(*, user: Any, scan_ids: Iterable[int]) -> set[int]:
    """``may_see_reading`` for many scans at once (list pages, API lists, a volume's B-scans)."""
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
    mine = Grade.objects.filter(tier=Tier.GRADING, grader=user).order_by()
    if _few_grades(user, mine):
        # Few grades of their own: one IN over a UNION ALL of them (not an OR of two
        # EXISTS), so that the database starts from those grades, not from every scan.
        graded = (
            Scan.objects.filter(ALONE, pk__in=mine.values("scan_id")).order_by().values("pk")
            .union(Scan.objects.filter(IN_VOLUME_UNIT, volume_id__in=mine.values("volume_id")).order_by().values("pk"), all=True)
        )
        visible = Q(pk__in=graded)
    else:
        # Many: the database tests each scan against a hash of them (hashed subplans).
        scans = Q(Exists(mine.filter(scan=OuterRef("pk"))))
        eyes = Q(Exists(mine.filter(volume=OuterRef("volume"))))
        visible = (IN_VOLUME_UNIT & eyes) | (ALONE & scans)
    if sees_everything(user):
        # Past tier 2 grading: the copy of the unit's stage on the scan (its volume's for
        # a B-scan of a volume unit); blank (no review) counts as open.
        visible |= ~Q(review_stage__in=[*OPEN_FOR_TIER2, ""])
    return visible


def _few_grades(user: Any, mine: QuerySet[Grade]) -> bool:
    """Whether ``user`` has at most ``GRADED_DRIVE_MAX`` tier 2 grades, asked once per user
    object (a request's): it chooses how the same condition is written, never its result."""
    few = getattr(user, "_oct_few_tier2_grades", None)
    if few is None:
        few = mine[: GRADED_DRIVE_MAX + 1].count() <= GRADED_DRIVE_MAX
        user._oct_few_tier2_grades = few
    return few


def grades_visible(
    *, user: Any, scan: Any = None, volume: Any = None, include_superseded: bool = False
) -> QuerySet[Grade]:
    """Grades of ``scan`` (or ``volume``) the user may see: all of them, or, for a blinded
    tier 2 grader, tier 1 grades and their own."""
    target = {"volume": volume} if volume is not None else {"scan": scan}
    qs = Grade.objects.filter(**target).select_related("grader", "supersedes").order_by("tier", "created_at", "id")
    if not include_superseded:
        qs = qs.current()
    if not user_roles(user):
        return qs.none()
    if is_blinded_tier2(user, scan, volume=volume):
        return qs.filter(Q(tier=Tier.QUALITY) | Q(grader=user))
    return qs


def grades_visible_by_scan(*, user: Any, scans: list[Any]) -> dict[int, list[Grade]]:
    """``grades_visible`` (superseded grades included) for many scans in a few queries."""
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


def grades_visible_by_volume(*, user: Any, volumes: list[Any]) -> dict[int, list[Grade]]:
    """``grades_visible`` (superseded grades included) for many volume units in three queries."""
    out: dict[int, list[Grade]] = {v.pk: [] for v in volumes}
    if not user_roles(user) or not out:
        return out
    blinded: set[int] = set()
    if Role.GRADER_T2.value in user_roles(user):
        graded = set(
            Grade.objects.filter(volume_id__in=out, tier=Tier.GRADING, grader=user).values_list("volume_id", flat=True)
        )
        blinded = set(out) - graded
        if blinded and sees_everything(user):
            blinded -= set(
                Review.objects.filter(volume_id__in=blinded).exclude(stage__in=OPEN_FOR_TIER2)
                .values_list("volume_id", flat=True)
            )
    rows = Grade.objects.filter(volume__in=volumes).select_related("grader").order_by("volume_id", "tier", "created_at", "id")
    for g in rows:
        if g.volume_id in blinded and g.tier != Tier.QUALITY and g.grader_id != user.pk:
            continue
        out[g.volume_id].append(g)
    return out


def volume_reading_visible_q(*, user: Any) -> Q:
    """``may_see_reading(volume=...)`` as a condition on Volume querysets (volumes of more
    than one B-scan), as ``reading_visible_q`` is for scans: a blinded tier 2 grader sees the
    volumes they graded in tier 2 and, holding tier 3 or admin too, those past tier 2."""
    held = user_roles(user)
    if not held:
        return Q(pk__in=[])
    if not settings.VERIFICATION_READING_CENTRE_MODE or Role.GRADER_T2.value not in held:
        return Q()
    graded = Q(Exists(Grade.objects.filter(volume=OuterRef("pk"), tier=Tier.GRADING, grader=user)))
    if sees_everything(user):
        graded |= Q(review__isnull=False) & ~Q(review__stage__in=OPEN_FOR_TIER2)
    return graded


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
