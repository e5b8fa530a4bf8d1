"""The examination report: what it says, its PDF (WeasyPrint), and the clinician's
sign-off that locks it.

A report lists every scan of the examination with its current reading (class,
calibrated probabilities, urgency, model version), its verification (stage, final
label, who verified it and when), key B-scans with their heatmaps, the referral the
most urgent finding suggests and the decision-support notice. Signing stores the PDF
as a ``ReportVersion`` together with a fingerprint of what it says; a later change
(a new reading, a verification, an edited examination) makes the signed version
outdated, and signing again makes the next version. Signed PDFs are never re-rendered.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone
from PIL import Image, ImageFile
from weasyprint import CSS, HTML

from cases.diagnoses import DECISION_SUPPORT_NOTICE, URGENCY_RANK, Diagnosis, Urgency
from cases.models import Case, Scan
from cases.roles import Role, has_role
from inference.models import Prediction
from inference.selectors import (
    heatmap_overlay,
    predictions_current_by_scan,
    predictions_heatmap_grid_load,
    reading_shown,
)
from octportal.errors import Conflict, Forbidden

from . import blinding

REPORT_CSS = settings.BASE_DIR / "static" / "verification" / "report.css"
from .models import ReportVersion, Review

# Importing WeasyPrint turns on Pillow's LOAD_TRUNCATED_IMAGES for the whole process; the
# upload validation (cases.images) refuses to run with it on, and a report embeds only PNGs
# this app wrote itself. Put it back.
ImageFile.LOAD_TRUNCATED_IMAGES = False

KEY_SCANS = 4
KEY_SCAN_SIZE = (520, 400)
SIGN_FORBIDDEN = "Only clinic staff can sign examination reports."
NOTHING_TO_SIGN = "This examination has no scans yet: there is no report to sign."
#: Scans in these states have no reading yet, and will have one: the report is not complete.
READING_PENDING = (Scan.Status.RECEIVED, Scan.Status.QUEUED, Scan.Status.RUNNING)


def readings_pending_text(n: int) -> str:
    return f"{n} B-scan{'s are' if n != 1 else ' is'} still being read: sign the report when the readings are in."


def readings_pending(*, case: Case) -> int:
    """How many of the examination's scans are still waiting for their reading."""
    return case.scans.filter(status__in=READING_PENDING).count()


@dataclass
class ReportScan:
    scan: Scan
    prediction: Prediction | None
    review: Review | None
    visible: bool
    in_volume: int | None = None  # the volume this B-scan is graded with (one review for the eye)

    @property
    def result(self) -> Prediction | None:
        return reading_shown(scan=self.scan, prediction=self.prediction, visible=self.visible)

    @property
    def verified(self) -> bool:
        return self.visible and self.review is not None and self.review.stage == Review.Stage.VERIFIED

    @property
    def differs(self) -> bool:
        return self.verified and self.result is not None and self.result.predicted != self.review.final_label

    @property
    def probabilities(self) -> list[tuple[str, float]]:
        return list(self.result.probabilities.items()) if self.result else []


@dataclass
class ReportVolume:
    """A volume graded as one eye: its one review, and whether the user may see its label."""

    volume: Any
    review: Review | None
    visible: bool

    @property
    def verified(self) -> bool:
        return self.visible and self.review is not None and self.review.stage == Review.Stage.VERIFIED


@dataclass
class ReportData:
    case: Case
    scans: list[ReportScan]
    volumes: list[ReportVolume] = field(default_factory=list)
    key_images: list[dict[str, Any]] = field(default_factory=list)
    notice: str = DECISION_SUPPORT_NOTICE

    @property
    def worst(self) -> ReportScan | None:
        read = [s for s in self.scans if s.result is not None]
        return min(read, key=lambda s: (URGENCY_RANK.get(s.result.urgency, 9), -s.result.confidence), default=None)

    @property
    def referral(self) -> str:
        worst = self.worst
        return Urgency(worst.result.urgency).label if worst else "No automated finding"

    @property
    def model_versions(self) -> list[str]:
        return sorted({s.result.model_version.label for s in self.scans if s.result is not None})


def report_data(*, case: Case, user: Any, with_images: bool = True) -> ReportData:
    """Everything the report of ``case`` says, as ``user`` may see it (``blinding``)."""
    scans = list(case.scans.order_by("uploaded_at", "id"))
    ids = [s.pk for s in scans]
    predictions = predictions_current_by_scan(case_id=case.pk)
    reviews = {r.scan_id: r for r in Review.objects.filter(scan_id__in=ids).select_related("verified_by")}
    visible = blinding.reading_visible_ids(user=user, scan_ids=ids)
    units = case.volumes.filter(slice_count__gt=1).order_by("uploaded_at", "id")
    in_unit = {v.pk for v in units}
    rows = [
        ReportScan(s, predictions.get(s.pk), reviews.get(s.pk), s.pk in visible,
                   s.volume_id if s.volume_id in in_unit else None)
        for s in scans
    ]
    volume_reviews = {r.volume_id: r for r in Review.objects.filter(volume__in=units).select_related("verified_by")}
    eyes = [ReportVolume(v, volume_reviews.get(v.pk), blinding.may_see_reading(user=user, volume=v)) for v in units]
    data = ReportData(case=case, scans=rows, volumes=eyes)
    if with_images:
        data.key_images = _key_images(rows)
    return data


def report_fingerprint(data: ReportData) -> str:
    """SHA-256 of what the report says: the same readings and verification give the same value."""
    case = data.case
    content = {
        "case": [case.pk, case.eye, str(case.exam_date), case.device, case.referring_clinician, case.patient.identifier],
        "scans": [
            [
                row.scan.pk,
                row.scan.status,
                row.result.pk if row.result else None,
                row.review.stage if row.review else None,
                row.review.final_label if row.review else None,
            ]
            for row in data.scans
        ],
    }
    if data.volumes:  # only then: reports of examinations without volume units keep their fingerprint
        content["volumes"] = [
            [v.volume.pk, v.review.stage if v.review else None, v.review.final_label if v.review else None]
            for v in data.volumes
        ]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _composite(scan: Scan, prediction: Prediction | None) -> tuple[str, str] | None:
    """The scan as a PNG data URI and, when there is one, the scan with its heatmap drawn over."""
    try:
        with scan.image.open("rb") as handle, Image.open(handle) as img:
            base = img.convert("RGBA")
    except (FileNotFoundError, OSError, ValueError):
        return None
    overlay_uri = ""
    try:
        # Its stored file, or drawn from the reading's heatmap grid (a report stores nothing).
        overlay = heatmap_overlay(prediction=prediction, scan=scan) if prediction is not None else None
        if overlay is not None:
            with Image.open(io.BytesIO(overlay.png)) as hm:
                # A copy for an overlay drawn from the grid (the scan's size), but a stored
                # overlay file's size is not checked, and alpha_composite needs equal sizes.
                layer = hm.convert("RGBA").resize(base.size)
            blended = Image.alpha_composite(base, layer)
            blended.thumbnail(KEY_SCAN_SIZE)
            overlay_uri = _data_uri(_png(blended.convert("RGB")))
    except (FileNotFoundError, OSError, ValueError):
        overlay_uri = ""
    base.thumbnail(KEY_SCAN_SIZE)
    return _data_uri(_png(base.convert("L"))), overlay_uri


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _key_images(rows: list[ReportScan]) -> list[dict[str, Any]]:
    """The most urgent, most confident read scans first (at most ``KEY_SCANS``)."""
    read = [r for r in rows if r.result is not None]
    read.sort(key=lambda r: (URGENCY_RANK.get(r.result.urgency, 9), -r.result.confidence))
    key = read[:KEY_SCANS]
    # Their grids in one query: drawn from where a reading has no stored overlay file.
    predictions_heatmap_grid_load(predictions=[row.result for row in key])
    images = []
    for row in key:
        pair = _composite(row.scan, row.result)
        if pair is not None:
            images.append({"row": row, "image": pair[0], "heatmap": pair[1]})
    return images


def report_pdf(*, data: ReportData, signature: ReportVersion | None = None, outdated: ReportVersion | None = None) -> bytes:
    """Render the report as PDF; ``signature`` prints the sign-off, else it is a draft."""
    html = render_to_string(
        "verification/report.html",
        {
            "data": data,
            "signature": signature,
            "outdated": outdated,
            "diagnoses": dict(Diagnosis.choices),
            "generated_at": timezone.now(),
        },
    )
    return HTML(string=html).write_pdf(stylesheets=[CSS(filename=str(REPORT_CSS))])


def report_versions(*, case: Case) -> QuerySet[ReportVersion]:
    """The signed versions of the case's report, newest first."""
    return case.report_versions.select_related("signed_by").order_by("-number")


def report_latest(*, case: Case) -> ReportVersion | None:
    return report_versions(case=case).first()


def report_sign(*, case: Case, user: Any) -> ReportVersion:
    """Sign the report of ``case`` as it reads now: store its PDF as the next version.

    Refused (``Conflict``) when the examination has no scan (nothing to report), when a
    scan is still waiting for its reading (the report is not complete), or when the
    latest signed version already says the same (nothing changed since); the page and
    the API both call this, and the ``report.signed`` webhook follows the saved version.
    """
    if not has_role(user, Role.CLINICIAN):
        raise Forbidden(SIGN_FORBIDDEN)
    with transaction.atomic():
        locked = Case.objects.select_for_update().select_related("patient").get(pk=case.pk)
        if not locked.scans.exists():
            raise Conflict(NOTHING_TO_SIGN)
        pending = readings_pending(case=locked)
        if pending:
            raise Conflict(readings_pending_text(pending))
        data = report_data(case=locked, user=user)
        fingerprint = report_fingerprint(data)
        latest = report_latest(case=locked)
        if latest is not None and latest.fingerprint == fingerprint:
            raise Conflict(f"Version {latest.number} of this report is already signed and nothing has changed since.")
        version = ReportVersion(
            case=locked,
            number=(latest.number + 1) if latest else 1,
            fingerprint=fingerprint,
            signed_by=user,
            signed_at=timezone.now(),
        )
        version.pdf.save("report.pdf", ContentFile(report_pdf(data=data, signature=version)), save=False)
        version.save()
    return version


@dataclass(frozen=True)
class ReportState:
    latest: ReportVersion | None
    current: bool  # the latest signed version says what the report would say now
    has_scans: bool = True
    pending: int = 0  # scans still waiting for their reading

    @property
    def status(self) -> str:
        """``unsigned`` (never signed), ``signed`` (the latest version is current) or ``changed``."""
        if self.latest is None:
            return "unsigned"
        return "signed" if self.current else "changed"

    @property
    def signable(self) -> bool:
        """Whether ``report_sign`` would make a new version now."""
        return self.has_scans and not self.pending and not self.current


def report_state(*, case: Case, user: Any) -> ReportState:
    """Whether the case's report is signed, and whether that signature is still current."""
    latest = report_latest(case=case)
    pending = readings_pending(case=case)
    if latest is None:
        return ReportState(None, False, case.scans.exists(), pending)
    fingerprint = report_fingerprint(report_data(case=case, user=user, with_images=False))
    return ReportState(latest, latest.fingerprint == fingerprint, True, pending)
