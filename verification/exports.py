"""Exports of verified review units: a CSV of labels and grades, and a retraining zip.

Both cover both units and say which each row counts (``unit``: ``scan`` for a single
B-scan, ``volume`` for an eye graded as one volume); scans first, then volumes.

Both are generators for ``StreamingHttpResponse``: nothing large is held in
memory, and both read grades through ``blinding.grades_visible_by_scan`` so the
blinding rules apply to exports too; the model's reading is the scan's current one.

Exports are pseudonymous: patients and scans appear only as keyed hashes (HMAC-SHA256
with ``VERIFICATION_EXPORT_KEY``), file names, file hashes and the source label's
origin (a path) are left out, the examination date is reduced to its year, and the
ZIP's images are re-encoded from their pixels (no metadata) with a fixed timestamp.
What an export contains is listed in docs/security.md.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from PIL import Image

from inference.selectors import predictions_current_by_scan, volume_reading

from . import blinding, selectors
from .models import Grade, Tier, Unit

# Zip entries carry this instead of the upload time (a date is a quasi-identifier).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _keyed_hash(text: str) -> str:
    key = settings.VERIFICATION_EXPORT_KEY or settings.SECRET_KEY
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def patient_pseudonym(identifier: str) -> str:
    """A stable numeric pseudonym for export: a keyed hash, not the stored identifier.

    The key is ``VERIFICATION_EXPORT_KEY`` (falls back to ``SECRET_KEY``), so the
    mapping cannot be recomputed from the export alone.
    """
    return str(int(_keyed_hash(identifier)[:15], 16) % 10**10)


def scan_pseudonym(scan: Any) -> str:
    """A stable pseudonym of a scan for export (keyed hash of its random uid)."""
    return "S" + _keyed_hash(f"scan:{scan.uid.hex}")[:16]


def volume_pseudonym(volume: Any) -> str:
    """A stable pseudonym of a volume for export (keyed hash of its random uid)."""
    return "V" + _keyed_hash(f"volume:{volume.uid.hex}")[:16]


def clean_png(scan: Any) -> bytes:
    """The scan's stored grey image re-encoded from its pixels alone (no metadata)."""
    with scan.image.open("rb") as fh:
        img = Image.open(fh)
        img.load()
    pixels = Image.frombytes("L", img.size, img.convert("L").tobytes())
    buf = io.BytesIO()
    pixels.save(buf, format="PNG")
    return buf.getvalue()


class _Echo:
    def write(self, value: str) -> str:
        return value


def _grade_text(g: Grade) -> str:
    text = f"{g.grader.get_username()}:{g.decision}"
    if g.tier == Tier.GRADING:
        found = "+".join(k for k, v in g.findings.items() if v) or "none"
        text += f" conf={g.confidence} findings={found}"
        if g.key_slices:
            text += " key_slices=" + "+".join(str(i) for i in g.key_slices)
    if g.supersedes_id:
        text += f" (corrects #{g.supersedes_id})"
    if g.time_taken_ms is not None:
        text += f" {g.time_taken_ms}ms"
    return f"#{g.pk} {text}"


CSV_HEADER = [
    "unit", "scan_pseudonym", "volume_pseudonym", "slice_count", "patient_pseudonym", "eye", "exam_year", "source_label",
    "final_label", "verified_by", "verified_at", "model_version", "model_predicted",
    "model_confidence", "p_cnv", "p_dme", "p_drusen", "p_normal", "tier1_grades", "tier2_grades", "tier3_grades",
    "key_slices",
]


def _by_tier(grades: list[Grade]) -> dict[int, list[str]]:
    by_tier: dict[int, list[str]] = defaultdict(list)
    for g in grades:
        by_tier[g.tier].append(_grade_text(g))
    return by_tier


def verified_csv_rows(*, user: Any, batch: int = 500) -> Iterator[str]:
    """CSV lines (header first) of verified units with final labels, grades and the model's
    reading: one row per verified scan (``unit`` scan), then one per verified volume
    (``unit`` volume: the eye's final label, the per-eye reading as the model's, the key
    B-scans the tier 2 grades marked).

    Scans come in batches of ``batch``, keyset pages (``selectors.verified_reviews(after=...)``),
    each with its joins, grades and readings fetched for that batch alone and sent as one chunk,
    so memory stays constant and the first rows leave before the last are read, at any number
    of verified scans."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    last = None
    while True:
        chunk = list(selectors.verified_reviews(after=last)[:batch])
        if not chunk:
            break
        yield "".join(_csv_scan_lines(writer, user, chunk))
        last = chunk[-1]
    volumes = selectors.verified_volume_reviews()
    ids = list(volumes.values_list("pk", flat=True))
    for start in range(0, len(ids), batch):
        chunk = list(volumes.filter(pk__in=ids[start : start + batch]))
        grades = blinding.grades_visible_by_volume(user=user, volumes=[r.volume for r in chunk])
        for review in chunk:
            volume = review.volume
            mine = grades.get(volume.pk, [])
            by_tier = _by_tier(mine)
            eye = volume_reading(volume=volume).reading
            yield writer.writerow(
                [
                    Unit.VOLUME.value,
                    "",
                    volume_pseudonym(volume),
                    volume.slice_count,
                    patient_pseudonym(volume.case.patient.identifier),
                    volume.case.eye,
                    volume.case.exam_date.year,
                    "",
                    review.final_label,
                    review.verified_by.get_username() if review.verified_by else "",
                    review.verified_at.isoformat() if review.verified_at else "",
                    "",
                    eye.diagnosis if eye else "",
                    "", "", "", "", "",
                    "; ".join(by_tier[1]),
                    "; ".join(by_tier[2]),
                    "; ".join(by_tier[3]),
                    "+".join(str(i) for i in selectors.key_slices_of(mine)),
                ]
            )


def _csv_scan_lines(writer: Any, user: Any, chunk: list[Any]) -> Iterator[str]:
    scans = [r.scan for r in chunk]
    grades = blinding.grades_visible_by_scan(user=user, scans=scans)
    predictions = predictions_current_by_scan(scan_ids=[s.pk for s in scans])
    for review in chunk:
        scan = review.scan
        by_tier = _by_tier(grades.get(scan.pk, []))
        p = predictions.get(scan.pk)
        yield writer.writerow(
            [
                Unit.SCAN.value,
                scan_pseudonym(scan),
                "",
                1,
                patient_pseudonym(scan.case.patient.identifier),
                scan.case.eye,
                scan.case.exam_date.year,
                scan.source_label,
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
                "",
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
    """Zip of verified scans in the reference layout ``CLASS/CLASS-PATIENT-N.png``.

    Patients are pseudonymised with ``patient_pseudonym``; images are the stored grey
    copies re-encoded without metadata; a MANIFEST.csv maps each file to its final
    label, scan pseudonym, the SHA-256 of the exported bytes, its unit and, for a
    volume's B-scan, the volume pseudonym and slice index.

    A verified volume contributes its key B-scans (those its current tier 2 grades
    marked) under the eye's final label: the eye's label is not every B-scan's (a CNV
    eye has normal off-centre B-scans). A verified volume without key B-scans
    contributes no image.
    """
    sink = _Sink()
    counters: dict[str, int] = defaultdict(int)
    manifest = ["path,final_label,scan_pseudonym,sha256,unit,volume_pseudonym,slice_index"]

    def entry(zf: zipfile.ZipFile, scan: Any, label: str, unit: str, volume: str = "", index: str = "") -> None:
        pseudo = patient_pseudonym(scan.case.patient.identifier)
        counters[pseudo] += 1
        name = f"{label}/{label}-{pseudo}-{counters[pseudo]}.png"
        data = clean_png(scan)
        zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data)
        manifest.append(
            f"{name},{label},{scan_pseudonym(scan)},{hashlib.sha256(data).hexdigest()},{unit},{volume},{index}"
        )

    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for review in selectors.verified_reviews().iterator(chunk_size=200):
            entry(zf, review.scan, review.final_label, Unit.SCAN.value)
            yield sink.drain()
        for review in selectors.verified_volume_reviews().iterator(chunk_size=50):
            volume = review.volume
            for scan in selectors.volume_key_scans(volume=volume).select_related("case__patient"):
                entry(zf, scan, review.final_label, Unit.VOLUME.value, volume_pseudonym(volume), str(scan.slice_index))
                yield sink.drain()
        zf.writestr(zipfile.ZipInfo("MANIFEST.csv", date_time=ZIP_DATE), "\n".join(manifest) + "\n")
    yield sink.drain()
