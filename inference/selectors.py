"""Read-side queries of automated reading, scoped to the user.

Model output (class, probabilities, heatmap, referral) is shown only to users whose
role allows it *and* for whom ``may_see_reference`` says so: in reading-centre mode a
grader must not see the model's reading before grading.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cases import selectors as cases_selectors
from cases.diagnoses import URGENCY_RANK, Diagnosis, Urgency
from cases.models import Case, Scan
from cases.roles import GRADER_ROLES, Role, has_role
from verification.selectors import may_see_reference

from .models import ModelVersion, Prediction

# Who may open a scan image (and so, subject to blinding, its reading): as cases.selectors.
SCAN_ROLES: tuple[str, ...] = (Role.CLINICIAN, *GRADER_ROLES)
PENDING_STATUSES = (Scan.Status.RECEIVED, Scan.Status.QUEUED, Scan.Status.RUNNING)


def scan_get_for_user(*, user: Any, scan_id: int) -> Scan:
    """Return the scan if ``user`` may open its image; same rule as the scan image
    (clinic staff, graders, admins). Raise NotFound / Forbidden otherwise."""
    return cases_selectors.scan_image_get(user=user, scan_id=scan_id)


def case_get_for_user(*, user: Any, case_id: int) -> Case:
    """Return the case if ``user`` may open it (clinic staff and admins)."""
    return cases_selectors.case_get(user=user, case_id=case_id)


def may_see_prediction(*, user: Any, scan: Scan) -> bool:
    """Whether ``user`` may see the model's reading of ``scan`` (role and blinding)."""
    if not has_role(user, *SCAN_ROLES):
        return False
    return bool(may_see_reference(user=user, scan=scan))


def may_rerun(*, user: Any) -> bool:
    return has_role(user, Role.CLINICIAN)


def prediction_latest(*, scan: Scan) -> Prediction | None:
    """The scan's most recent prediction (of any model version)."""
    return scan.predictions.select_related("model_version").order_by("-created_at", "-id").first()


def predictions_latest_by_scan(*, scan_ids: Iterable[int] | None = None, case_id: int | None = None) -> dict[int, Prediction]:
    """Latest prediction per scan in one query, for a list of scans or a whole case."""
    qs = Prediction.objects.select_related("model_version").order_by("scan_id", "-created_at", "-id")
    if case_id is not None:
        qs = qs.filter(scan__case_id=case_id)
    else:
        qs = qs.filter(scan_id__in=list(scan_ids or []))
    latest: dict[int, Prediction] = {}
    for prediction in qs:
        latest.setdefault(prediction.scan_id, prediction)
    return latest


def model_version_list() -> list[ModelVersion]:
    return list(ModelVersion.objects.order_by("-is_active", "-created_at", "-id"))


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
    def result(self) -> Prediction | None:
        """The reading to show: a passed prediction, only when visible and not pending."""
        p = self.prediction
        if not self.visible or p is None or not p.gate_passed or self.scan.status != Scan.Status.ANALYSED:
            return None
        return p

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


def scan_analysis(*, user: Any, scan: Scan, prediction: Prediction | None | bool = False) -> ScanAnalysis:
    """Build the view of one scan's reading; pass ``prediction`` when already fetched."""
    visible = may_see_prediction(user=user, scan=scan)
    if prediction is False:
        prediction = prediction_latest(scan=scan) if visible else None
    return ScanAnalysis(
        scan=scan,
        visible=visible,
        prediction=prediction if visible else None,
        can_rerun=may_rerun(user=user),
    )


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


def case_summary(*, user: Any, scans: Iterable[Scan], predictions: dict[int, Prediction]) -> CaseSummary:
    """Summarise visible readings: worst urgency first, then highest confidence."""
    summary = CaseSummary()
    for scan in scans:
        summary.total += 1
        if scan.status in PENDING_STATUSES:
            summary.pending += 1
            continue
        if scan.status == Scan.Status.FAILED:
            summary.failed += 1
            continue
        if not may_see_prediction(user=user, scan=scan):
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
