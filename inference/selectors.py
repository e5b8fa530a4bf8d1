"""Read-side queries of automated reading.

"The scan's current reading" is defined here, once: its most recent prediction,
whichever model version made it (each prediction names its version). The result
page, grading, statistics, exports and the API all use these functions.

Whether a user may see a reading is not decided here but by the caller, through
``verification.blinding`` (this layer sits below verification).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Case, Exists, F, IntegerField, OuterRef, QuerySet, Subquery, Value, When

from cases import selectors as cases_selectors
from cases.diagnoses import URGENCY_RANK, Diagnosis, Urgency
from django.conf import settings

from cases.models import Acknowledgement, Patient, Scan, Volume
from cases.roles import Role, has_role
from octportal.errors import Forbidden

from .heatmap import heatmap_overlay_from_grid
from .models import ModelVersion, Prediction
from .volume_reading import EyeReading, SliceReading, eye_reading

GATE_REJECTED_LABEL = "Not read: not an OCT B-scan"
PENDING_STATUSES = (Scan.Status.RECEIVED, Scan.Status.QUEUED, Scan.Status.RUNNING)
# Newest first: the first prediction of a scan in this order is its current reading.
CURRENT_ORDER = ("-created_at", "-id")


def may_rerun(*, user: Any) -> bool:
    return has_role(user, Role.CLINICIAN)


def rerun_accepted(*, scan: Scan, prediction: Prediction | None) -> bool:
    """Whether ``inference.services.scan_rerun`` would accept a re-run of ``scan``, given its
    current reading: not while queued or running, and not when the active model version
    already read it successfully (the same version gives the same result)."""
    if scan.status in PENDING_STATUSES:
        return False
    return not (
        prediction is not None
        and prediction.gate_passed
        and prediction.model_version.is_active
        and scan.status == Scan.Status.ANALYSED
    )


# Loaded only where used: the heatmap grid (a few KB, read to render an overlay once) and
# the model version's card and metrics (JSON parsed for every row, read by no page).
PREDICTION_DEFERRED = ("heatmap_grid", "model_version__card", "model_version__metrics")


def prediction_current(*, scan: Scan) -> Prediction | None:
    """The scan's current reading (its most recent prediction, of any model version)."""
    return (
        scan.predictions.select_related("model_version").defer(*PREDICTION_DEFERRED).order_by(*CURRENT_ORDER).first()
    )


def predictions_current_by_scan(
    *, scan_ids: Iterable[int] | None = None, case_id: int | None = None
) -> dict[int, Prediction]:
    """The current reading per scan in one query, for a list of scans or a whole case."""
    qs = Prediction.objects.select_related("model_version").defer(*PREDICTION_DEFERRED).order_by("scan_id", *CURRENT_ORDER)
    if case_id is not None:
        qs = qs.filter(scan__case_id=case_id)
    else:
        qs = qs.filter(scan_id__in=list(scan_ids or []))
    current: dict[int, Prediction] = {}
    for prediction in qs:
        current.setdefault(prediction.scan_id, prediction)
    return current


def prediction_current_value(field_name: str, scan_ref: str = "pk") -> Subquery:
    """A subquery of one field of the current reading, to annotate scan querysets."""
    rows = Prediction.objects.filter(scan=OuterRef(scan_ref)).order_by(*CURRENT_ORDER).values(field_name)[:1]
    return Subquery(rows)


# The current reading's class and urgency are copied onto the scan (cases.Scan.current_*,
# kept by inference.services.run.scan_reading_copy), so lists filter and count on plain
# indexed columns; the rest comes from the prediction row itself.
READING_COPIES = {"reading_predicted": "current_class", "reading_urgency": "current_urgency"}
READING_FIELDS = {
    "reading_confidence": "confidence",
    "reading_low_confidence": "low_confidence",
    "reading_gate_passed": "gate_passed",
    "reading_at": "created_at",
    "reading_model_version_id": "model_version_id",
}


def scans_with_reading(qs: QuerySet[Scan]) -> QuerySet[Scan]:
    """Annotate scans with their current reading's fields (``reading_predicted``,
    ``reading_urgency``, ...) in SQL: one query for a whole page. The caller applies
    the blinding rule before showing them."""
    copies = {name: F(column) for name, column in READING_COPIES.items()}
    return qs.annotate(**copies, **{name: prediction_current_value(f) for name, f in READING_FIELDS.items()})


def urgency_rank(field_name: str) -> Case:
    """``URGENCY_RANK`` as an SQL expression over ``field_name`` (blank/unknown last)."""
    whens = [When(**{field_name: code}, then=Value(rank)) for code, rank in URGENCY_RANK.items()]
    return Case(*whens, default=Value(9), output_field=IntegerField())


def _worst_urgency_of(scans: QuerySet[Scan]) -> Subquery:
    """The most urgent current reading among ``scans`` (read successfully)."""
    rows = (
        scans.filter(status=Scan.Status.ANALYSED)
        .exclude(current_urgency="")
        .annotate(rank=urgency_rank("current_urgency"))
        .order_by("rank")
        .values("current_urgency")[:1]
    )
    return Subquery(rows)


def _latest_reading_of(predictions: QuerySet[Prediction], field_name: str) -> Subquery:
    # The newest prediction among a patient's (or case's) scans is the current reading of its scan.
    return Subquery(predictions.filter(gate_passed=True).order_by(*CURRENT_ORDER).values(field_name)[:1])


def patients_with_readings(qs: QuerySet[Patient]) -> QuerySet[Patient]:
    """Annotate patients with ``worst_urgency`` (over every scan's current reading) and
    ``latest_predicted`` / ``latest_reading_at`` (their newest reading), in SQL."""
    preds = Prediction.objects.filter(scan__case__patient=OuterRef("pk"))
    return qs.annotate(
        worst_urgency=_worst_urgency_of(Scan.objects.filter(case__patient=OuterRef("pk"))),
        latest_predicted=_latest_reading_of(preds, "predicted"),
        latest_reading_at=_latest_reading_of(preds, "created_at"),
    )


def cases_with_readings(qs: QuerySet[Any]) -> QuerySet[Any]:
    """The same annotations for examinations (cases)."""
    preds = Prediction.objects.filter(scan__case=OuterRef("pk"))
    return qs.annotate(
        worst_urgency=_worst_urgency_of(Scan.objects.filter(case=OuterRef("pk"))),
        latest_predicted=_latest_reading_of(preds, "predicted"),
        latest_reading_at=_latest_reading_of(preds, "created_at"),
    )


def urgent_unacknowledged(*, user: Any) -> QuerySet[Scan]:
    """Scans whose current reading is urgent and that no one has acknowledged yet, newest
    first: the clinic's list of results needing attention (clinic staff). Walks the
    index on the copied urgency and upload time."""
    acknowledged = Acknowledgement.objects.filter(scan=OuterRef("pk"))
    return (
        scans_with_reading(cases_selectors.scan_list(user=user, status=Scan.Status.ANALYSED))
        .filter(reading_urgency=Urgency.URGENT)
        .filter(~Exists(acknowledged))
        .order_by("-uploaded_at", "-id")
    )


def acknowledged_recently(*, user: Any, limit: int = 10) -> list[Acknowledgement]:
    """The newest acknowledgements, with their scan, case, patient and who made them."""
    if not cases_selectors.may_see_records(user=user):
        raise Forbidden(cases_selectors.RECORDS_FORBIDDEN)
    return list(
        Acknowledgement.objects.select_related("scan__case__patient", "acknowledged_by").order_by("-created_at", "-id")[
            :limit
        ]
    )


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.order_by("-is_active", "-created_at", "-id")


def reading_shown(*, scan: Scan, prediction: Prediction | None, visible: bool) -> Prediction | None:
    """The reading a page shows of ``scan``: its passed current prediction, when the user
    may see it and the scan is analysed (not pending, not failed); else None."""
    if not visible or prediction is None or not prediction.gate_passed or scan.status != Scan.Status.ANALYSED:
        return None
    return prediction


@dataclass
class ScanAnalysis:
    """What the pages and the API show of one scan's automated reading."""

    scan: Scan
    visible: bool
    prediction: Prediction | None
    can_rerun: bool = False

    @property
    def status(self) -> str:
        return self.scan.status

    @property
    def pending(self) -> bool:
        return self.scan.status in PENDING_STATUSES

    @property
    def failed(self) -> bool:
        return self.scan.status == Scan.Status.FAILED

    @property
    def gate_rejected(self) -> bool:
        """The input gate judged the image not to be a retinal OCT B-scan."""
        p = self.prediction
        return self.failed and p is not None and not p.gate_passed

    @property
    def state_label(self) -> str:
        """One label for the scan's state, the gate's rejection named as such."""
        if self.gate_rejected:
            return GATE_REJECTED_LABEL
        return self.scan.get_status_display()

    @property
    def result(self) -> Prediction | None:
        """The reading to show: a passed prediction, only when visible and not pending."""
        return reading_shown(scan=self.scan, prediction=self.prediction, visible=self.visible)

    @property
    def bars(self) -> list[dict[str, Any]]:
        p = self.result
        if p is None:
            return []
        return [
            {
                "code": code,
                "label": Diagnosis(code).label,
                "p": prob,
                "pct": round(prob * 100, 1),
                "top": code == p.predicted,
            }
            for code, prob in p.probabilities.items()
        ]


def scan_analysis(*, user: Any, scan: Scan, visible: bool, prediction: Prediction | None | bool = False) -> ScanAnalysis:
    """Build the view of one scan's reading; ``visible`` comes from the blinding rule,
    ``prediction`` when the current reading is already fetched."""
    if prediction is False:
        prediction = prediction_current(scan=scan) if visible else None
    prediction = prediction if visible else None
    return ScanAnalysis(
        scan=scan,
        visible=visible,
        prediction=prediction,
        can_rerun=may_rerun(user=user) and rerun_accepted(scan=scan, prediction=prediction),
    )


def predictions_heatmap_grid_load(*, predictions: Iterable[Prediction]) -> None:
    """Load, in one query, the heatmap grid (deferred by ``PREDICTION_DEFERRED``) of those
    of ``predictions`` that name a heatmap, for ``heatmap_overlay`` to draw from without a
    query per reading."""
    todo = [p for p in predictions if p.heatmap and "heatmap_grid" in p.get_deferred_fields()]
    if not todo:
        return
    grids = dict(Prediction.objects.filter(pk__in=[p.pk for p in todo]).values_list("pk", "heatmap_grid"))
    for prediction in todo:
        prediction.heatmap_grid = grids.get(prediction.pk)


@dataclass(frozen=True)
class HeatmapOverlay:
    png: bytes
    stored: bool  # False: rendered from the reading's grid just now, not yet in storage


def heatmap_overlay(*, prediction: Prediction, scan: Scan | None = None) -> HeatmapOverlay | None:
    """The overlay PNG of a reading's heatmap: its stored file, else rendered from the grid
    the reading kept, the size of the scan's grey image (``scan``: the prediction's, when in
    hand). Nothing is written here. None when the reading has no heatmap, or neither its
    file nor its grid is left. The caller applies the blinding rule first."""
    if not prediction.heatmap:
        return None
    try:
        with prediction.heatmap.open("rb") as handle:
            return HeatmapOverlay(png=handle.read(), stored=True)
    except FileNotFoundError:
        pass
    grid = prediction.heatmap_grid
    if not grid:
        return None
    scan = scan if scan is not None else prediction.scan
    return HeatmapOverlay(png=heatmap_overlay_from_grid(bytes(grid), (scan.width, scan.height)), stored=False)


@dataclass
class CaseSummary:
    """Examination-level summary: the most urgent finding across a case's scans."""

    total: int = 0
    analysed: int = 0
    pending: int = 0
    failed: int = 0
    hidden: int = 0
    worst: Prediction | None = None
    worst_scan: Scan | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def urgency(self) -> str:
        return self.worst.urgency if self.worst else ""

    @property
    def urgency_label(self) -> str:
        return Urgency(self.worst.urgency).label if self.worst else ""


def case_summary(*, scans: Iterable[Scan], predictions: dict[int, Prediction], visible_ids: set[int]) -> CaseSummary:
    """Summarise the readings in ``visible_ids``: worst urgency first, then highest confidence."""
    summary = CaseSummary()
    for scan in scans:
        summary.total += 1
        if scan.status in PENDING_STATUSES:
            summary.pending += 1
            continue
        if scan.status == Scan.Status.FAILED:
            summary.failed += 1
            continue
        if scan.pk not in visible_ids:
            summary.hidden += 1
            continue
        p = predictions.get(scan.pk)
        if p is None or not p.gate_passed:
            continue
        summary.analysed += 1
        summary.counts[p.predicted] = summary.counts.get(p.predicted, 0) + 1
        key = (URGENCY_RANK.get(p.urgency, 9), -p.confidence)
        if summary.worst is None or key < (URGENCY_RANK.get(summary.worst.urgency, 9), -summary.worst.confidence):
            summary.worst, summary.worst_scan = p, scan
    return summary


@dataclass
class VolumeAnalysis:
    """The per-eye reading of a volume and each slice's score (the viewer's strip)."""

    volume: Volume
    reading: EyeReading | None
    slices: list[dict[str, Any]]  # per slice in order: scan id, index, position, status, urgent probability or None
    pending: int

    @property
    def complete(self) -> bool:
        return self.pending == 0

    @property
    def most_suspicious(self) -> int | None:
        """The index of the slice with the highest visible urgent probability (the first of
        equals); None when no slice's reading is visible."""
        read = [s for s in self.slices if s["p_urgent"] is not None]
        return max(read, key=lambda s: s["p_urgent"])["slice_index"] if read else None


def _positions(scans: list[Scan]) -> list[float]:
    """Each slice's place across the volume, 0 (first) to 1 (last): from the file's slice
    positions when every slice has one, else evenly by index."""
    mm = [s.slice_position_mm for s in scans]
    if scans and all(m is not None for m in mm) and max(mm) > min(mm):
        lo, hi = min(mm), max(mm)
        return [round((m - lo) / (hi - lo), 4) for m in mm]
    last = max(1, len(scans) - 1)
    return [round(i / last, 4) if len(scans) > 1 else 0.5 for i in range(len(scans))]


def volume_reading(*, volume: Volume, visible_ids: set[int] | None = None) -> VolumeAnalysis:
    """Read a volume per eye from its slices' current readings (rule: ``inference.volume_reading``).

    ``visible_ids``: the scans whose readings the user may see (``verification.blinding``);
    None means all. Only analysed slices whose reading passed the input gate count.
    """
    # volume_id too: the related manager sets each scan's volume, which loads a deferred
    # volume_id one query per B-scan (25 queries a 25-slice volume).
    scans = list(volume.scans.order_by("slice_index").only("pk", "volume_id", "slice_index", "slice_position_mm", "status"))
    current = predictions_current_by_scan(scan_ids=[s.pk for s in scans])
    read: list[SliceReading] = []
    strip: list[dict[str, Any]] = []
    for scan, position in zip(scans, _positions(scans), strict=True):
        p = current.get(scan.pk)
        usable = (
            p is not None and p.gate_passed and scan.status == Scan.Status.ANALYSED
            and (visible_ids is None or scan.pk in visible_ids)
        )
        if usable:
            read.append(SliceReading(slice_index=scan.slice_index, probabilities=p.probabilities))
        strip.append({
            "scan_id": scan.pk,
            "slice_index": scan.slice_index,
            "position": position,
            "status": scan.status,
            "p_urgent": round(read[-1].p_urgent, 4) if usable else None,
            "predicted": p.predicted if usable else "",
            "heatmap": bool(usable and p.heatmap),
        })
    reading = eye_reading(read, min_slices=settings.OCT_EYE_URGENT_MIN_SLICES, min_p=settings.OCT_EYE_URGENT_MIN_P)
    pending = sum(1 for s in scans if s.status in PENDING_STATUSES)
    return VolumeAnalysis(volume=volume, reading=reading, slices=strip, pending=pending)


# --- follow-up over visits: the same eye's examinations over time ---------------------------


def _visit_reading_of(field_name: str) -> Subquery:
    """One field of a visit's (examination's) reading: the most urgent current reading that
    passed the input gate among its analysed scans, the most confident first among equals
    (the report's suggested referral)."""
    rows = (
        Scan.objects.filter(case=OuterRef("pk"), status=Scan.Status.ANALYSED)
        .annotate(
            u=prediction_current_value("urgency"),
            g=prediction_current_value("gate_passed"),
            c=prediction_current_value("confidence"),
            p=prediction_current_value("predicted"),
        )
        .filter(g=True)
        .annotate(rank=urgency_rank("u"))
        .order_by("rank", "-c", "id")
        .values(field_name)[:1]
    )
    return Subquery(rows)


def visits_with_readings(qs: QuerySet[Any]) -> QuerySet[Any]:
    """Annotate examinations with their visit reading in SQL: ``visit_predicted``,
    ``visit_urgency``, ``visit_confidence`` and ``visit_scan_id`` (the scan it comes from)."""
    return qs.annotate(
        visit_predicted=_visit_reading_of("p"),
        visit_urgency=_visit_reading_of("u"),
        visit_confidence=_visit_reading_of("c"),
        visit_scan_id=_visit_reading_of("pk"),
    )


@dataclass
class Visit:
    """One examination of an eye in the follow-up, with its reading and whether that
    reading differs from the previous visit's that has one."""

    case: Any
    predicted: str | None
    urgency: str | None
    confidence: float | None
    scan_id: int | None
    previous_predicted: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.predicted and self.previous_predicted and self.predicted != self.previous_predicted)


def eye_followup(*, user: Any, patient_id: int, eye: str) -> tuple[Patient, list[Visit]]:
    """A patient's examinations of one eye, oldest first, each with its reading (one query
    for the patient, one for the visits). Clinic staff only (``cases.selectors``)."""
    patient = cases_selectors.patient_get(user=user, patient_id=patient_id)
    rows = visits_with_readings(
        cases_selectors.case_list(user=user, patient_id=patient.pk).filter(eye=eye)
    ).order_by("exam_date", "id")
    visits: list[Visit] = []
    last: str | None = None
    for c in rows:
        v = Visit(c, c.visit_predicted, c.visit_urgency, c.visit_confidence, c.visit_scan_id, previous_predicted=last)
        visits.append(v)
        if v.predicted:
            last = v.predicted
    return patient, visits


def changed_since_last_visit(*, user: Any, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], tuple[str, str]]:
    """For (patient id, eye) pairs: those whose latest visit with a reading reads
    differently from the visit with a reading before it, as ``(previous, latest)``
    classes. One query (after the role check) for any number of pairs (the home page's 25 rows)."""
    wanted = set(pairs)
    if not wanted or not cases_selectors.may_see_records(user=user):
        return {}
    patient_ids = {p for p, _ in wanted}
    rows = (
        visits_with_readings(cases_selectors.case_list(user=user).filter(patient_id__in=patient_ids))
        .exclude(visit_predicted__isnull=True)
        .order_by("patient_id", "eye", "-exam_date", "-id")
        .values_list("patient_id", "eye", "visit_predicted")
    )
    seen: dict[tuple[int, str], list[str]] = {}
    for patient_id, eye, predicted in rows:
        key = (patient_id, eye)
        if key in wanted and len(seen.setdefault(key, [])) < 2:
            seen[key].append(predicted)
    return {key: (v[1], v[0]) for key, v in seen.items() if len(v) == 2 and v[0] != v[1]}
