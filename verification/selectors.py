"""Read-side queries of tiered verification, scoped to the user. They only read.

What a user may see of a scan before grading is decided by :mod:`.blinding`; the
scan's current reading by :mod:`inference.selectors`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import BooleanField, Case, Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.utils import timezone

from cases import selectors as cases_selectors
from cases.diagnoses import Diagnosis, Urgency
from cases.models import Scan, Volume
from cases.roles import Role, user_roles
from inference.selectors import (
    prediction_current,
    prediction_current_value,
    scans_with_reading,
    volume_reading,
)
from octportal.errors import Forbidden
from octportal.paging import capped_counts

from . import blinding
from . import statistics
from .statistics import TIME_BUCKET_MS, Aggregates
from .models import IN_VOLUME_UNIT, Grade, Review, Tier, Unit, unit_filter

WORKLIST_STAGES: dict[int, tuple[str, ...]] = {
    Tier.QUALITY: (Review.Stage.RECEIVED, Review.Stage.QUALITY_CONTROL),
    Tier.GRADING: (Review.Stage.GRADING,),
    Tier.VERIFICATION: (Review.Stage.VERIFICATION, Review.Stage.ARBITRATION),
}


def may_act_in_tier(user: Any, tier: int) -> bool:
    """Whether the user's role lets them grade in ``tier``.

    Admins may act as tier 3 (senior verification) but not in tiers 1 and 2, so a
    superuser never silently counts as an independent tier 2 grader.
    """
    held = user_roles(user)
    if tier == Tier.VERIFICATION:
        return Role.GRADER_T3.value in held or Role.ADMIN.value in held
    role = {Tier.QUALITY: Role.GRADER_T1, Tier.GRADING: Role.GRADER_T2}.get(tier)
    return role is not None and role.value in held


@dataclass(frozen=True)
class Reference:
    """The label a grader is asked to confirm or correct."""

    label: str  # blank when there is nothing to verify against
    origin: str  # "source" | "model" | ""
    origin_detail: str
    prediction: Any | None


def reference_for(*, scan: Scan) -> Reference:
    """The scan's current label: its source label if set, else the model's current reading.

    Callers must check ``blinding.may_see_reading`` before showing it.
    """
    prediction = prediction_current(scan=scan)
    if scan.source_label:
        return Reference(scan.source_label, "source", scan.source_label_origin, prediction)
    if prediction is not None and prediction.gate_passed and prediction.predicted:
        return Reference(prediction.predicted, "model", prediction.model_version.label, prediction)
    return Reference("", "", "", prediction)


def review_get(*, scan: Scan | None = None, volume: Volume | None = None) -> Review:
    """The review of a scan or a volume (opened when it was submitted)."""
    unit = {"volume": volume} if volume is not None else {"scan": scan}
    review = Review.objects.filter(**unit).select_related("verified_by").first()
    if review is None:  # a row made outside the intake service: show it as just received
        review = Review(**unit, stage=Review.Stage.RECEIVED, required_grades=settings.VERIFICATION_REQUIRED_GRADES)
    return review


def volume_reviews_by_volume(*, volume_ids: list[int]) -> dict[int, Review]:
    """The reviews of volume units (stage, final label of the eye), in one query.
    Callers check ``blinding`` before showing a final label."""
    rows = Review.objects.filter(volume_id__in=volume_ids).select_related("verified_by")
    return {r.volume_id: r for r in rows}


def verified_reviews_by_scan(*, scan_ids: list[int]) -> dict[int, Review]:
    """Verified reviews (final label, who, when) of the given scans, in one query.
    Callers check ``blinding`` before showing them."""
    rows = Review.objects.filter(scan_id__in=scan_ids, stage=Review.Stage.VERIFIED).select_related("verified_by")
    return {r.scan_id: r for r in rows}


def with_gate_rejected(scans: QuerySet[Scan]) -> QuerySet[Scan]:
    """Annotate ``gate_rejected``: the scan failed because its current reading's input gate
    judged it not an OCT B-scan (``model_gate_passed`` false). A scan that failed for another
    reason, has no reading yet or passed is not gate-rejected. Tier 1 hides these by default."""
    return scans.annotate(
        model_gate_passed=prediction_current_value("gate_passed"),
        gate_rejected=Case(
            When(status=Scan.Status.FAILED, model_gate_passed=False, then=True),
            default=False,
            output_field=BooleanField(),
        ),
    )


def volume_gate_rejected() -> Case:
    """For a Volume queryset: whether the input gate rejected every one of its B-scans
    (``with_gate_rejected``). One B-scan still waiting, passed or failed otherwise keeps the
    volume in view: a volume the gate refused only in part has readable B-scans and a per-eye
    reading, and its tier 1 decides for all of it."""
    slices = with_gate_rejected(Scan.objects.filter(volume=OuterRef("pk")))
    return Case(
        When(Exists(slices) & ~Exists(slices.filter(gate_rejected=False)), then=True),
        default=False,
        output_field=BooleanField(),
    )


def worklist_for(*, user: Any, tier: int, include_gate_rejected: bool = False) -> QuerySet[Scan]:
    """Scans the signed-in grader may take next in ``tier``, urgent first, then oldest.

    Excludes scans the grader already acted on in any tier. "Urgent" is the scan's
    current reading (``Scan.current_urgent``, the copy inference keeps of
    ``inference.selectors.prediction_current``), where ``blinding.worklist_uses_reading``
    allows it; otherwise oldest first. Both orders walk an index of ``cases_scan``, so a
    page costs the same at a million scans as at a thousand.

    A scan at the grading stage always lacks some of its required tier 2 grades (the
    last one moves it on), so tier 2 needs no count to filter on; ``tier2_count`` is
    computed for the rows shown only.

    Tier 1 leaves out scans the input gate rejected as not an OCT B-scan unless
    ``include_gate_rejected`` (``gate_rejected`` marks them).
    """
    if not may_act_in_tier(user, tier):
        return Scan.objects.none()
    qs = with_gate_rejected(
        # B-scans of a volume of more than one are graded with their volume (volume_worklist_for),
        # even where a B-scan review from before volumes were one unit is still open.
        Scan.objects.filter(review__stage__in=WORKLIST_STAGES[tier])
        .exclude(IN_VOLUME_UNIT)
        .exclude(Exists(Grade.objects.filter(scan=OuterRef("pk"), grader=user)))
    ).select_related("review", "case", "case__patient")
    if tier == Tier.QUALITY and not include_gate_rejected:
        qs = qs.filter(gate_rejected=False)
    if tier == Tier.GRADING:
        current = Grade.objects.filter(scan=OuterRef("pk"), tier=Tier.GRADING, superseded_by__isnull=True)
        qs = qs.annotate(tier2_count=Subquery(current.values("scan").annotate(n=Count("pk")).values("n")[:1]))
    if blinding.worklist_uses_reading(tier=tier):
        return qs.annotate(model_urgent=F("current_urgent")).order_by("-current_urgent", "uploaded_at", "id")
    # The order must not tell a blinded tier 2 grader what the model thinks.
    return qs.annotate(model_urgent=Value(None, output_field=BooleanField(null=True))).order_by("uploaded_at", "id")


def volume_worklist_for(*, user: Any, tier: int, include_gate_rejected: bool = False) -> QuerySet[Volume]:
    """Volumes (of more than one B-scan, each one review unit) the signed-in grader may take
    next in ``tier``, in the scans' order: urgent first where ``blinding.worklist_uses_reading``
    allows it (``model_urgent``: any of its B-scans' current reading is urgent), then oldest.

    Excludes volumes the grader already acted on in any tier. ``tier2_count`` as in
    ``worklist_for``. Tier 1 leaves out volumes the input gate rejected all of
    (``volume_gate_rejected``) unless ``include_gate_rejected``, as ``worklist_for`` does
    scans (``gate_rejected`` marks them).
    """
    if not may_act_in_tier(user, tier):
        return Volume.objects.none()
    qs = (
        Volume.objects.filter(slice_count__gt=1, review__stage__in=WORKLIST_STAGES[tier])
        .exclude(Exists(Grade.objects.filter(volume=OuterRef("pk"), grader=user)))
        .annotate(gate_rejected=volume_gate_rejected())
        .select_related("review", "case", "case__patient")
    )
    if tier == Tier.QUALITY and not include_gate_rejected:
        qs = qs.filter(gate_rejected=False)
    if tier == Tier.GRADING:
        current = Grade.objects.filter(volume=OuterRef("pk"), tier=Tier.GRADING, superseded_by__isnull=True)
        qs = qs.annotate(tier2_count=Subquery(current.values("volume").annotate(n=Count("pk")).values("n")[:1]))
    if blinding.worklist_uses_reading(tier=tier):
        urgent = Exists(Scan.objects.filter(volume=OuterRef("pk"), current_urgent=True))
        return qs.annotate(model_urgent=urgent).order_by("-model_urgent", "uploaded_at", "id")
    return qs.annotate(model_urgent=Value(None, output_field=BooleanField(null=True))).order_by("uploaded_at", "id")


def next_in_worklist(*, user: Any, tier: int, after: Scan | Volume | None = None) -> Scan | Volume | None:
    """The first unit (scan or volume) of the grader's worklists, other than ``after``:
    the head of the volume worklist or of the scan worklist, whichever comes first in
    the worklists' order (urgent first where allowed, then oldest)."""
    scans, volumes = worklist_for(user=user, tier=tier), volume_worklist_for(user=user, tier=tier)
    if isinstance(after, Volume):
        volumes = volumes.exclude(pk=after.pk)
    elif after is not None:
        scans = scans.exclude(pk=after.pk)
    heads = [u for u in (volumes.first(), scans.first()) if u is not None]
    if not heads:
        return None
    return min(heads, key=lambda u: (not u.model_urgent, u.uploaded_at, isinstance(u, Scan)))


def volume_review_state(*, user: Any, volume: Volume) -> dict[str, Any]:
    """Everything a page or API response shows about a volume's verification, blinded for
    ``user``: the review, the grades the user may see and, where the user may see readings,
    the per-eye reading (``reference``: its diagnosis is the label graders confirm or correct)."""
    see_ref = blinding.may_see_reading(user=user, volume=volume)
    return {
        "review": review_get(volume=volume),
        "grades": list(blinding.grades_visible(user=user, volume=volume)),
        "may_see_reference": see_ref,
        "eye_reading": volume_reading(volume=volume).reading if see_ref else None,
    }


def review_state(*, user: Any, scan: Scan) -> dict[str, Any]:
    """Everything a page or API response shows about a scan's verification, blinded for ``user``."""
    see_ref = blinding.may_see_reading(user=user, scan=scan)
    reference = reference_for(scan=scan) if see_ref else None
    if reference is not None and reference.origin == "source" and not blinding.may_see_file_names(user):
        # The source label's origin is free text (a data-set path, a letter's file name).
        reference = replace(reference, origin_detail="")
    return {
        "review": review_get(scan=scan),
        "grades": list(blinding.grades_visible(user=user, scan=scan)),
        "may_see_reference": see_ref,
        "reference": reference,
    }


def statistics_aggregates(*, labels: list[str], unit: str = Unit.SCAN) -> Aggregates:
    """The statistics page's inputs for one review unit (``scan``: single B-scans;
    ``volume``: eyes), counted by the database (GROUP BY): contingency tables of grader
    pairs, tier 2 label patterns, model against final and source labels, QC decisions,
    grading time histograms, stages. A handful of rows come back, whatever the number
    of grades.

    The model's side of a scan is its current reading (``Scan.current_class``); of a
    volume, its per-eye reading (``inference.selectors.volume_reading``), computed for the
    verified volumes only (volumes carry no source label).
    """
    grade, review, scan = Grade._meta.db_table, Review._meta.db_table, Scan._meta.db_table
    key = "volume_id" if unit == Unit.VOLUME else "scan_id"
    current = f"NOT EXISTS (SELECT 1 FROM {grade} c WHERE c.supersedes_id = {{g}}.id)"
    agg = Aggregates(labels=list(labels))
    with connection.cursor() as cur:
        cur.execute(
            f"""SELECT a.grader_id, b.grader_id, a.label, b.label, COUNT(*) FROM {grade} a
            JOIN {grade} b ON b.{key} = a.{key} AND b.tier = 2 AND b.grader_id > a.grader_id
            WHERE a.tier = 2 AND {current.format(g="a")} AND {current.format(g="b")}
            GROUP BY a.grader_id, b.grader_id, a.label, b.label"""
        )
        for ga, gb, la, lb, n in cur.fetchall():
            agg.pair_tables.setdefault((ga, gb), Counter())[(la, lb)] += n
        cur.execute(
            f"""SELECT {", ".join(f"c{i}" for i in range(len(labels)))}, COUNT(*) FROM (
                SELECT {", ".join(f"SUM(CASE WHEN g.label = %s THEN 1 ELSE 0 END) AS c{i}" for i in range(len(labels)))}
                FROM {grade} g WHERE g.tier = 2 AND g.label <> '' AND g.{key} IS NOT NULL AND {current.format(g="g")}
                GROUP BY g.{key}
            ) per_unit GROUP BY {", ".join(f"c{i}" for i in range(len(labels)))}""",
            labels,
        )
        for *pattern, n in cur.fetchall():
            agg.patterns[tuple(int(x) for x in pattern)] += n
        cur.execute(
            f"""SELECT g.grader_id, SUM(CASE WHEN g.label = r.final_label THEN 1 ELSE 0 END), COUNT(*)
            FROM {grade} g JOIN {review} r ON r.{key} = g.{key}
            WHERE g.tier = 2 AND g.label <> '' AND r.final_label <> '' AND {current.format(g="g")}
            GROUP BY g.grader_id"""
        )
        agg.grader_final = {gid: (int(agree), n) for gid, agree, n in cur.fetchall()}
        if unit == Unit.SCAN:
            cur.execute(
                f"""SELECT r.final_label, s.current_class, COUNT(*) FROM {review} r JOIN {scan} s ON s.id = r.scan_id
                WHERE r.final_label <> '' AND s.current_class <> '' GROUP BY r.final_label, s.current_class"""
            )
            agg.model_final = Counter({(t, p): n for t, p, n in cur.fetchall()})
            cur.execute(
                f"""SELECT s.source_label, s.current_class, COUNT(*) FROM {scan} s LEFT JOIN {review} r ON r.scan_id = s.id
                WHERE s.source_label <> '' AND s.current_class <> '' AND (r.id IS NULL OR r.final_label = '')
                GROUP BY s.source_label, s.current_class"""
            )
            agg.model_source = Counter({(t, p): n for t, p, n in cur.fetchall()})
        cur.execute(
            f"""SELECT g.accepted, g.exclusion_reason, COUNT(*) FROM {grade} g
            WHERE g.tier = 1 AND g.{key} IS NOT NULL AND {current.format(g="g")} GROUP BY g.accepted, g.exclusion_reason"""
        )
        agg.qc = Counter({(None if a is None else bool(a), reason): n for a, reason, n in cur.fetchall()})
        cur.execute(
            f"""SELECT g.tier, g.time_taken_ms / {TIME_BUCKET_MS}, COUNT(*), SUM(g.time_taken_ms) FROM {grade} g
            WHERE g.time_taken_ms IS NOT NULL AND g.{key} IS NOT NULL AND {current.format(g="g")}
            GROUP BY g.tier, g.time_taken_ms / {TIME_BUCKET_MS}"""
        )
        for tier, bucket, n, total in cur.fetchall():
            agg.times.setdefault(tier, Counter())[int(bucket)] += n
            old_total, old_n = agg.time_sums.get(tier, (0, 0))
            agg.time_sums[tier] = (old_total + int(total), old_n + n)
        cur.execute(f"SELECT stage, COUNT(*) FROM {review} WHERE {key} IS NOT NULL GROUP BY stage")
        agg.stages = Counter(dict(cur.fetchall()))
    if unit == Unit.VOLUME:
        verified = Review.objects.filter(volume__isnull=False).exclude(final_label="").select_related("volume")
        for r in verified.iterator(chunk_size=200):
            eye = volume_reading(volume=r.volume).reading
            if eye is not None:
                agg.model_final[(r.final_label, eye.diagnosis)] += 1
    ids = {g for pair in agg.pair_tables for g in pair} | set(agg.grader_final)
    agg.names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    return agg


# v2: one report per review unit (a snapshot cached by an older release has one report only).
STATISTICS_CACHE_KEY = "verification:statistics-report:v2"


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The statistics reports, one per review unit (``by_unit``: scan, volume), and when
    they were computed. ``report`` is the scan unit's."""

    by_unit: dict[str, Any]
    computed_at: Any

    @property
    def report(self) -> Any:
        return self.by_unit[Unit.SCAN]


def statistics_snapshot(*, labels: list[str], fresh: bool = False) -> StatisticsSnapshot:
    """The statistics reports of both units, computed at most
    ``VERIFICATION_STATISTICS_MAX_AGE_S`` ago (kept in the cache; ``fresh`` recomputes
    them, as the beat task does)."""
    snapshot = None if fresh else cache.get(STATISTICS_CACHE_KEY)
    if snapshot is None or snapshot.report.labels != labels:
        snapshot = StatisticsSnapshot(
            by_unit={
                u: statistics.build_report(statistics_aggregates(labels=labels, unit=u), unit=u) for u in Unit.values
            },
            computed_at=timezone.now(),
        )
        cache.set(STATISTICS_CACHE_KEY, snapshot, settings.VERIFICATION_STATISTICS_MAX_AGE_S)
    return snapshot


def verified_reviews(*, after: Review | None = None) -> QuerySet[Review]:
    """Verified reviews of scans with their scan, case and patient, oldest scan first; with
    ``after``, only those that come after that review in this order (keyset paging: a
    batch walks the scans' ``(uploaded_at, id)`` index from there, whatever its depth)."""
    qs = Review.objects.filter(stage=Review.Stage.VERIFIED, scan__isnull=False)
    if after is not None:
        at = after.scan.uploaded_at
        # The >= lets the index range start at ``at``; the OR breaks ties by scan id.
        qs = qs.filter(scan__uploaded_at__gte=at).filter(Q(scan__uploaded_at__gt=at) | Q(scan_id__gt=after.scan_id))
    return qs.select_related("scan", "scan__case", "scan__case__patient", "verified_by").order_by(
        "scan__uploaded_at", "scan_id"
    )


def verified_volume_reviews() -> QuerySet[Review]:
    """Verified reviews of volumes with their volume, case and patient, oldest volume first."""
    return (
        Review.objects.filter(stage=Review.Stage.VERIFIED, volume__isnull=False)
        .select_related("volume", "volume__case", "volume__case__patient", "verified_by")
        .order_by("volume__uploaded_at", "volume_id")
    )


def key_slices_of(grades: list[Grade]) -> list[int]:
    """The key B-scans of a volume: every one a current tier 2 grade marked, in order."""
    superseded = {g.supersedes_id for g in grades if g.supersedes_id}
    return sorted({i for g in grades if g.tier == Tier.GRADING and g.pk not in superseded for i in g.key_slices})


def volume_key_scans(*, volume: Volume) -> QuerySet[Scan]:
    """The key B-scans of a volume (every one a current tier 2 grade marked), in slice order.
    Not scoped to a user: callers (exports, webhooks) are tier 3, admins or the system."""
    current = Grade.objects.current().filter(volume=volume, tier=Tier.GRADING)
    keys = {i for marked in current.values_list("key_slices", flat=True) for i in marked}
    return Scan.objects.filter(volume=volume, slice_index__in=sorted(keys)).order_by("slice_index")


def audit_entries_for(*, scan: Scan) -> QuerySet[Any]:
    """Audit log entries of a scan, its review and its grades, newest first (admins only)."""
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


# --- explore: every scan the user may see, filterable -----------------------------------


def explore_scans(*, user: Any) -> QuerySet[Scan]:
    """Every scan ``user`` may see (clinic staff and graders), newest first, annotated with
    its current reading (``reading_*``), whether the user may see that reading
    (``reading_visible``, from :mod:`.blinding`) and its verification (the copies
    ``review_stage`` and ``review_label``: its volume's for a B-scan of a volume unit).
    Filters on the reading or the label must also require ``reading_visible``."""
    if not cases_selectors.may_see_images(user=user):
        raise Forbidden(cases_selectors.IMAGES_FORBIDDEN)
    visible = blinding.reading_visible_q(user=user)
    # An empty condition means every reading is visible to this user.
    flag = Case(When(visible, then=True), default=False, output_field=BooleanField()) if visible else Value(True)
    return (
        scans_with_reading(Scan.objects.all())
        .annotate(reading_visible=flag)
        .select_related("case", "case__patient", "volume")
        .order_by("-uploaded_at", "-id")
    )


# Counts per category stop here ("1,000+", as the page count does): an exact count would
# walk every matching scan (a million at 1M), a capped one at most this many index
# entries per category (14 categories: 10,000 cost ~1 s on the shared 2-core VM).
EXPLORE_COUNT_CAP = 1_000


class CategoryCount(NamedTuple):
    """One category's count on the explore page; ``n`` is at most ``EXPLORE_COUNT_CAP`` + 1."""

    code: str
    label: str
    n: int

    @property
    def capped(self) -> bool:
        return self.n > EXPLORE_COUNT_CAP

    @property
    def text(self) -> str:
        return f"{EXPLORE_COUNT_CAP:,}+" if self.capped else f"{self.n:,}"


#: With a filter on another table (exam date, device, model version) the counts are taken
#: among the first this many matching scans in the page's order: a capped count of a
#: category that is empty under such a filter would walk every scan the filter matches
#: (26 s at 1M).
EXPLORE_COUNT_SAMPLE = 2_000

# Every value each copied column of the scan takes, blank included, spelled out on each
# count so that it is an index-only range of ``scan_explore_cells`` (class, urgency, stage,
# label) whichever columns the filters fix: PostgreSQL before 18 cannot skip a leading
# column of an index it is not given.
CELL_COLUMNS = {
    "current_class": [*Diagnosis.values, ""],
    "current_urgency": [*Urgency.values, ""],
    "review_stage": [*Review.Stage.values, ""],
}


class SampledCount(CategoryCount):
    """A category's exact count among the first matching scans in the page's order (never capped)."""

    __slots__ = ()

    @property
    def capped(self) -> bool:
        return False


@dataclass(frozen=True)
class ExploreCounts:
    """The explore page's counts per category (``groups``: predicted, urgency, stage, each a
    list; ``counts["stage"]`` reads one) and, when they were taken among the first matching
    scans in the page's order only, how many (``sample``)."""

    groups: dict[str, list[CategoryCount]]
    sample: int | None = None

    def __getitem__(self, group: str) -> list[CategoryCount]:
        return self.groups[group]

    def items(self) -> Any:
        return self.groups.items()


def explore_counts(qs: QuerySet[Scan], *, user: Any, sampled: bool = False, filtered: bool = True) -> ExploreCounts:
    """Counts per category of a filtered explore queryset: predicted class and urgency
    (over the readings ``user`` may see, by :mod:`.blinding`) and verification stage.
    Empty categories are left out.

    Each is capped at ``EXPLORE_COUNT_CAP``, all in one SQL statement of index-only ranges,
    where the filters are on the scan's own copies (class, urgency, stage, verified label).
    ``sampled`` (a filter on another table): exact counts among the first
    ``EXPLORE_COUNT_SAMPLE`` matching scans in the page's order (newest uploads first, or
    newest examinations first under an exam-date filter), in one statement; ``sample``
    says so when more scans match (one more statement, only when that many matched)."""
    cells = _explore_cells(user=user)
    if sampled:
        first = qs.values("pk")[:EXPLORE_COUNT_SAMPLE]  # the page's own order: the first rows it shows
        rows = Scan.objects.filter(pk__in=first)
        aggregates = {f"c{i}": Count("pk", filter=cell[-1]) for i, cell in enumerate(cells)}
        found = rows.aggregate(all=Count("pk"), **aggregates)
        counts = [found[f"c{i}"] for i in range(len(cells))]
        # Exactly that many matching is no sample: is there one more (in any order)?
        more = found["all"] == EXPLORE_COUNT_SAMPLE and qs.order_by()[EXPLORE_COUNT_SAMPLE:].exists()
        sample = EXPLORE_COUNT_SAMPLE if more else None
    else:
        cells_qs = explore_count_querysets(qs, user=user, filtered=filtered, cells=cells)
        counts = capped_counts([cell for *_, cell in cells_qs], cap=EXPLORE_COUNT_CAP)
        sample = None
    kind = SampledCount if sampled else CategoryCount
    out: dict[str, list[CategoryCount]] = {group: [] for group, *_ in cells}
    for (group, code, label, *_), n in zip(cells, counts):
        if n:
            out[group].append(kind(code, str(label), n))
    return ExploreCounts(out, sample)


def _explore_cells(*, user: Any) -> list[tuple[str, str, str, str, Q]]:
    """``(group, code, label, column, condition)`` of each category ``explore_counts``
    counts: the scan's ``column`` is ``code``, among the scans whose reading ``user`` may
    see for the reading's groups."""
    visible = blinding.reading_visible_q(user=user)
    groups: dict[str, tuple[Q, str, Any]] = {
        "predicted": (visible, "current_class", Diagnosis.choices),
        "urgency": (visible, "current_urgency", Urgency.choices),
        "stage": (Q(), "review_stage", Review.Stage.choices),
    }
    return [
        (group, code, str(label), column, seen & Q(**{column: code}))
        for group, (seen, column, choices) in groups.items()
        for code, label in choices
    ]


def explore_count_querysets(
    qs: QuerySet[Scan], *, user: Any, filtered: bool = True, cells: list[tuple[str, str, str, str, Q]] | None = None
) -> list[tuple[str, str, str, QuerySet[Scan]]]:
    """``(group, code, label, scans)`` of each category ``explore_counts`` counts (capped),
    from ``cells`` (``_explore_cells(user=user)`` unless the caller built them). Under
    filters on the scan's copies (``filtered``), and for the stages always, each is also
    filtered on every other leading column of ``scan_explore_cells``; unfiltered, a class
    or urgency is a range of its own index, newest first (``scan_class_newest``,
    ``scan_urgency_newest``), which finds a grader's graded scans sooner."""
    base = qs.order_by()
    return [
        (group, code, label, base.filter(cond, **(
            {f"{c}__in": v for c, v in CELL_COLUMNS.items() if c != column} if filtered or group == "stage" else {}
        )))
        for group, code, label, column, cond in (_explore_cells(user=user) if cells is None else cells)
    ]


# --- reference gallery: verified examples of each class ---------------------------------

REFERENCE_PER_CLASS = 4


#: How many of each class's newest verified reviews (chosen ones first) are ranked by
#: agreement: this many of scans and this many of volumes.
REFERENCE_CANDIDATES = 50


def reference_examples(*, user: Any, per_class: int = REFERENCE_PER_CLASS, exclude_scan_id: int | None = None) -> dict[str, list[Review]]:
    """Verified examples of each class for the learn pages and the viewer's comparison:
    reviews a tier 3 grader verified; those a tier 3 grader chose (``reference_pick``)
    first, then the highest tier 2 agreement with the final label (then the newest
    verification), at most ``per_class`` per class. Each review's ``example`` is the B-scan
    to show: a scan's own, or for a volume verified as one eye its key B-scan
    (``_volume_examples``); a volume whose tier 2 grades marked no key B-scan is no example
    (the eye's label is not every B-scan's).

    Bounded at any size: per class, the ``REFERENCE_CANDIDATES`` newest verified reviews
    (chosen ones first) of scans and of volumes apart are taken by an index walk, two
    queries per class, and only those are ranked by agreement, in one more query; two more
    find the key B-scans of the volumes among the examples, if any. (Ranking every
    verified review took 11 s at a million scans: the agreement count joins all their
    grades.)

    Patient images: nobody without a role (anonymous visitors included) gets any, and
    a blinded tier 2 grader only units whose label they may see (``blinding``)."""
    out: dict[str, list[Review]] = {code: [] for code in Diagnosis.values}
    if not cases_selectors.may_see_images(user=user):
        return out
    keyed = Grade.objects.current().filter(volume=OuterRef("volume_id"), tier=Tier.GRADING).exclude(key_slices=[])
    base = Review.objects.filter(stage=Review.Stage.VERIFIED, verified_by__isnull=False)
    # Scans' and volumes' reviews walked apart: as one OR the database hashed every keyed
    # tier 2 grade first (a scan of 2M grades, 160 ms per class at 1.25M scans).
    units = (base.filter(scan__isnull=False), base.filter(Exists(keyed), volume__isnull=False))
    visible = blinding.reading_visible_q(user=user)
    if visible:  # a blinded tier 2 grader: only the units whose reading they may see
        volumes = Volume.objects.filter(blinding.volume_reading_visible_q(user=user), pk=OuterRef("volume_id"))
        units = (units[0].filter(Exists(Scan.objects.filter(visible, pk=OuterRef("scan_id")))),
                 units[1].filter(Exists(volumes)))
    if exclude_scan_id is not None:
        units = tuple(u.exclude(scan_id=exclude_scan_id) for u in units)
    candidates: list[int] = []
    for code in Diagnosis.values:
        for unit in units:
            newest = unit.filter(final_label=code).order_by("-reference_pick", "-verified_at", "-pk")
            candidates += newest.values_list("pk", flat=True)[:REFERENCE_CANDIDATES]
    if not candidates:
        return out
    current_t2 = {"tier": Tier.GRADING, "superseded_by__isnull": True}
    # A review is of a scan or of a volume: one of the two joins is empty for each row.
    of_scan = Q(**{f"scan__grades__{k}": v for k, v in current_t2.items()})
    of_volume = Q(**{f"volume__grades__{k}": v for k, v in current_t2.items()})
    ranked = (
        Review.objects.filter(pk__in=candidates)
        .annotate(
            agreement=Count("scan__grades", filter=of_scan & Q(scan__grades__label=F("final_label")), distinct=True)
            + Count("volume__grades", filter=of_volume & Q(volume__grades__label=F("final_label")), distinct=True),
            grades_t2=Count("scan__grades", filter=of_scan, distinct=True)
            + Count("volume__grades", filter=of_volume, distinct=True),
        )
        .select_related("scan", "volume", "verified_by")
        .order_by("final_label", F("reference_pick").desc(), F("agreement").desc(), F("verified_at").desc(), F("pk").desc())
    )
    for review in ranked:
        if len(out[review.final_label]) < per_class:
            review.example = review.scan
            out[review.final_label].append(review)
    _volume_examples([r for reviews in out.values() for r in reviews if r.volume_id])
    return {code: [r for r in reviews if r.example is not None] for code, reviews in out.items()}


def _volume_examples(reviews: list[Review]) -> None:
    """Set each volume review's ``example``: the key B-scan most of its current tier 2 grades
    marked (the lower slice on a tie), in two queries for all of them."""
    if not reviews:
        return
    votes: dict[int, Counter[int]] = {r.volume_id: Counter() for r in reviews}
    marked = Grade.objects.current().filter(volume_id__in=list(votes), tier=Tier.GRADING)
    for volume_id, keys in marked.values_list("volume_id", "key_slices"):
        votes[volume_id].update(set(keys))
    chosen = {v: min(c, key=lambda i: (-c[i], i)) for v, c in votes.items() if c}
    where = Q(pk__in=[])
    for volume_id, index in chosen.items():
        where |= Q(volume_id=volume_id, slice_index=index)
    scans = {(s.volume_id, s.slice_index): s for s in Scan.objects.filter(where)}
    for review in reviews:
        review.example = scans.get((review.volume_id, chosen.get(review.volume_id)))
