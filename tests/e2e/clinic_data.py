"""One small clinic for the browser tests of the viewer, the accessibility check and the
README screenshots: every page type has something to show.

With the real OCT images (``OCT_DATA_DIR``) and the shipped model, the B-scans are real
and read by the model (real heatmaps); without them, generated B-scans with stored
readings and a generated heatmap.
"""
from __future__ import annotations

import datetime
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from cases.models import Scan, Volume
from cases.roles import Role
from tests.conftest import make_user, oct_data_dir
from tests.factories import CaseFactory, PatientFactory, ScanFactory, review_update
from tests.inference.support import WEIGHTS_DIR, make_prediction
from verification.models import Grade, Review, Tier

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


@dataclass
class Clinic:
    users: dict[str, Any]
    patient: Any = None
    scans: dict[str, Scan] = field(default_factory=dict)
    cases: dict[str, Any] = field(default_factory=dict)
    volume: Volume | None = None
    real: bool = False


def _real_images() -> dict[str, list[Path]] | None:
    root = oct_data_dir() / "kermany"
    if not (oct_data_dir() / "MANIFEST.tsv").is_file() or not any(WEIGHTS_DIR.glob("*.onnx")):
        return None
    out = {}
    for label in CLASSES:
        files = sorted((root / label).glob("*.jp*g"))
        if not files:
            return None
        out[label] = files[:6]
    return out


def _heatmap_png(width: int = 512, height: int = 496) -> bytes:
    """A generated heatmap overlay (RGBA): a warm blob in the middle, transparent elsewhere."""
    y, x = np.mgrid[0:height, 0:width]
    v = np.exp(-(((x - width * 0.55) / (width * 0.12)) ** 2 + ((y - height * 0.5) / (height * 0.1)) ** 2))
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., 0] = (255 * v).astype(np.uint8)
    rgba[..., 1] = (255 * v * (1 - v)).astype(np.uint8)
    rgba[..., 3] = (150 * (v > 0.2) * v).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


class _Reader:
    def __init__(self) -> None:
        self.images = _real_images()
        self.used: dict[str, int] = {c: 0 for c in CLASSES}

    @property
    def real(self) -> bool:
        return self.images is not None

    def scan(self, label: str, *, read: bool = True, **kwargs) -> Scan:
        if self.images is None:
            scan = ScanFactory(status=Scan.Status.ANALYSED if read else Scan.Status.RECEIVED, **kwargs)
            if read:
                make_prediction(scan, None, label, confidence=0.9, heatmap=_heatmap_png())
            return scan
        from inference import services  # only with the real model

        path = self.images[label][self.used[label] % len(self.images[label])]
        self.used[label] += 1
        scan = ScanFactory(
            data=path.read_bytes(), format="JPEG", original_name=path.name, status=Scan.Status.QUEUED,
            **{"width": Image.open(path).width, "height": Image.open(path).height, **kwargs},
        )
        if read:
            services.prediction_run(scan_id=scan.pk)
            scan.refresh_from_db()
        else:
            Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.RECEIVED)
        return scan


def _t2(scan: Scan, grader, label: str) -> None:
    Grade.objects.create(
        scan=scan, tier=Tier.GRADING, grader=grader, label=label, confidence=4,
        finding_cnv=label == "CNV", finding_macular_edema=label == "DME", finding_drusen=label == "DRUSEN",
        finding_other=False,
    )


def build() -> Clinic:
    """Users (password ``pw-<username>``), a patient whose right eye changed between two
    visits, verified examples of every class, scans waiting in each tier and a volume."""
    users = {
        "clinician": make_user("clinician", Role.CLINICIAN),
        "grader1": make_user("grader1", Role.GRADER_T1),
        "grader2a": make_user("grader2a", Role.GRADER_T2),
        "grader2b": make_user("grader2b", Role.GRADER_T2),
        "grader3": make_user("grader3", Role.GRADER_T3),
        "admin": make_user("boss", Role.ADMIN, is_staff=True, is_superuser=True),
    }
    reader = _Reader()
    clinic = Clinic(users=users, real=reader.real)
    patient = PatientFactory(identifier="PT-2026-0042")
    clinic.patient = patient
    first = CaseFactory(patient=patient, eye="OD", exam_date=datetime.date(2026, 3, 2), device="Heidelberg Spectralis")
    second = CaseFactory(patient=patient, eye="OD", exam_date=datetime.date(2026, 9, 14), device="Heidelberg Spectralis")
    clinic.cases.update(first=first, second=second)
    clinic.scans["first"] = reader.scan("DRUSEN", case=first)
    clinic.scans["urgent"] = reader.scan("CNV", case=second)
    reader.scan("DME", case=second)

    # Verified examples of each class: two agreeing tier 2 grades, verified by tier 3.
    for label in CLASSES:
        scan = reader.scan(label)
        _t2(scan, users["grader2a"], label)
        _t2(scan, users["grader2b"], label)
        review_update(
            scans=scan, stage=Review.Stage.VERIFIED, final_label=label, verified_by=users["grader3"], verified_at=timezone.now()
        )
        clinic.scans[f"verified-{label}"] = scan

    # Waiting in each tier.
    clinic.scans["tier1"] = reader.scan("NORMAL")
    review_update(scans=clinic.scans["tier1"], stage=Review.Stage.QUALITY_CONTROL)
    clinic.scans["tier2"] = reader.scan("CNV")
    review_update(scans=clinic.scans["tier2"], stage=Review.Stage.GRADING)
    clinic.scans["tier3"] = reader.scan("DME")
    _t2(clinic.scans["tier3"], users["grader2a"], "DME")
    _t2(clinic.scans["tier3"], users["grader2b"], "DME")
    review_update(scans=clinic.scans["tier3"], stage=Review.Stage.VERIFICATION)

    # A volume of three B-scans in the second visit.
    volume = Volume.objects.create(
        case=second, source_format="zip", laterality="OD", slice_count=3, sha256="e" * 64, original_name="macula.zip",
    )
    for i, label in enumerate(("NORMAL", "CNV", "CNV")):
        reader.scan(label, case=second, volume=volume, slice_index=i)
    clinic.volume = volume
    return clinic


def _localizer_png(size: int = 384) -> bytes:
    """A fundus-like infrared localizer: a dark disc with a bright optic nerve head."""
    y, x = np.mgrid[0:size, 0:size] / size
    fundus = 90 + 60 * np.exp(-(((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.12))
    disc = 120 * np.exp(-(((x - 0.78) ** 2 + (y - 0.5) ** 2) / 0.002))
    buf = io.BytesIO()
    Image.fromarray(np.clip(fundus + disc, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def volume_with_localizer(clinic: Clinic, labels: tuple[str, ...], *, spacing_mm: float = 0.12) -> Volume:
    """A third visit of the clinic's patient holding one volume of ``labels`` B-scans,
    ``spacing_mm`` apart, with its localizer (real B-scans and readings when available)."""
    case = CaseFactory(patient=clinic.patient, eye="OD", exam_date=datetime.date(2026, 11, 2),
                       device="Heidelberg Spectralis")
    volume = Volume(case=case, source_format="dicom", laterality="OD", slice_count=len(labels), sha256="f" * 64,
                    original_name="macula.dcm", slice_spacing_mm=spacing_mm)
    volume.localizer.save("localizer.png", ContentFile(_localizer_png()), save=False)
    volume.save()
    reader = _Reader()
    for i, label in enumerate(labels):
        reader.scan(label, case=case, volume=volume, slice_index=i, slice_position_mm=round(i * spacing_mm, 4))
    clinic.cases["volume"] = case
    return volume
