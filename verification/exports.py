"""Exports of verified scans: a CSV of labels and grades, and a retraining zip.

Both are generators for ``StreamingHttpResponse``: nothing large is held in
memory, and both read grades through ``blinding.grades_visible_by_scan`` so the
blinding rules apply to exports too; the model's reading is the scan's current one.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from inference.selectors import predictions_current_by_scan

from . import blinding, selectors
from .models import Grade, Tier

EXTENSION = {"JPEG": ".jpeg", "PNG": ".png", "TIFF": ".tiff", "BMP": ".bmp"}
CHUNK = 256 * 1024


def patient_pseudonym(identifier: str) -> str:
    """A stable numeric pseudonym for export: a keyed hash, not the stored identifier.

    The key is ``VERIFICATION_EXPORT_KEY`` (falls back to ``SECRET_KEY``), so the
    mapping cannot be recomputed from the export alone.
    """
    key = settings.VERIFICATION_EXPORT_KEY or settings.SECRET_KEY
    digest = hmac.new(key.encode(), identifier.encode(), hashlib.sha256).hexdigest()
    return str(int(digest[:15], 16) % 10**10)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _grade_text(g: Grade) -> str:
    text = f"{g.grader.get_username()}:{g.decision}"
    if g.tier == Tier.GRADING:
        found = "+".join(k for k, v in g.findings.items() if v) or "none"
        text += f" conf={g.confidence} findings={found}"
    if g.supersedes_id:
        text += f" (corrects #{g.supersedes_id})"
    if g.time_taken_ms is not None:
        text += f" {g.time_taken_ms}ms"
    return f"#{g.pk} {text}"


CSV_HEADER = [
    "scan_id", "patient_pseudonym", "eye", "exam_date", "original_name", "sha256", "source_label",
    "source_label_origin", "final_label", "verified_by", "verified_at", "model_version", "model_predicted",
    "model_confidence", "p_cnv", "p_dme", "p_drusen", "p_normal", "tier1_grades", "tier2_grades", "tier3_grades",
]


def verified_csv_rows(*, user: Any, batch: int = 500) -> Iterator[str]:
    """CSV lines (header first) of verified scans with final labels, grades and the model's reading."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    reviews = selectors.verified_reviews()
    ids = list(reviews.values_list("pk", flat=True))
    for start in range(0, len(ids), batch):
        chunk = list(reviews.filter(pk__in=ids[start : start + batch]))
        scans = [r.scan for r in chunk]
        grades = blinding.grades_visible_by_scan(user=user, scans=scans)
        predictions = predictions_current_by_scan(scan_ids=[s.pk for s in scans])
        for review in chunk:
            scan = review.scan
            by_tier: dict[int, list[str]] = defaultdict(list)
            for g in grades.get(scan.pk, []):
                by_tier[g.tier].append(_grade_text(g))
            p = predictions.get(scan.pk)
            yield writer.writerow(
                [
                    scan.pk,
                    patient_pseudonym(scan.case.patient.identifier),
                    scan.case.eye,
                    scan.case.exam_date.isoformat(),
                    scan.original_name,
                    scan.sha256,
                    scan.source_label,
                    scan.source_label_origin,
                    review.final_label,
                    review.verified_by.get_username() if review.verified_by else "",
                    review.verified_at.isoformat() if review.verified_at else "",
                    p.model_version.label if p else "",
                    p.predicted if p else "",
                    f"{p.confidence:.4f}" if p else "",
                    *([f"{x:.4f}" for x in (p.p_cnv, p.p_dme, p.p_drusen, p.p_normal)] if p else ["", "", "", ""]),
                    "; ".join(by_tier[1]),
                    "; ".join(by_tier[2]),
                    "; ".join(by_tier[3]),
                ]
            )


class _Sink:
    """A write-only, non-seekable file for zipfile that hands back what was written."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def verified_zip_stream(*, user: Any) -> Iterator[bytes]:
    """Zip of verified scans in the reference layout ``CLASS/CLASS-PATIENT-N.ext``.

    Patients are pseudonymised with ``patient_pseudonym``; a MANIFEST.csv maps each
    file to its final label and hash. Images are stored (JPEGs do not compress).
    """
    sink = _Sink()
    counters: dict[str, int] = defaultdict(int)
    manifest = ["path,final_label,sha256"]
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for review in selectors.verified_reviews().iterator(chunk_size=200):
            scan = review.scan
            pseudo = patient_pseudonym(scan.case.patient.identifier)
            counters[pseudo] += 1
            label = review.final_label
            ext = EXTENSION.get(scan.format.upper(), ".png")
            name = f"{label}/{label}-{pseudo}-{counters[pseudo]}{ext}"
            info = zipfile.ZipInfo(name, date_time=scan.uploaded_at.timetuple()[:6])
            with scan.original.open("rb") as src, zf.open(info, "w", force_zip64=True) as dest:
                while block := src.read(CHUNK):
                    dest.write(block)
                    yield sink.drain()
            manifest.append(f"{name},{label},{scan.sha256}")
            yield sink.drain()
        zf.writestr("MANIFEST.csv", "\n".join(manifest) + "\n")
    yield sink.drain()
