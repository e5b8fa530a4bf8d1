"""Import a labelled OCT data set laid out like the reference one (Kermany et al. 2018).

``[train|test|val/]CLASS/CLASS-PATIENT-N.jpeg``: the folder gives the source label,
the file name the patient. Other names (e.g. the C8 set's ``cnv_train_1006.jpg``)
are accepted; without a patient number each image becomes its own patient.

Conventions (documented in docs/verification.md):
- patient identifier ``KER-<patient number>`` (``IMP-<file stem>`` without one);
- one case per patient, eye recorded as OD because the data set does not say
  (the case's notes say so), exam date the day of the first import;
- re-running skips files whose SHA-256 is already stored in the patient's case.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from itertools import zip_longest
from pathlib import Path
from typing import Any

from django.db import transaction

from cases.diagnoses import Diagnosis
from cases.models import Case, Patient, Scan
from cases.services import case_create, patient_create
from inference.services import predict_scans
from octportal.errors import Conflict, DomainError

from .services import scan_submit

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp"}
KERMANY_NAME = re.compile(r"^(?P<cls>[A-Za-z]+)-(?P<patient>\d+)-(?P<n>\d+)$")
CASE_NOTE = "Imported from a labelled data set; the eye is not recorded there and is set to OD by convention."


@dataclass(frozen=True)
class DatasetFile:
    path: Path
    label: str
    patient_identifier: str


@dataclass
class ImportResult:
    seen: int = 0
    created: int = 0
    skipped_existing: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unsupported: int = 0
    analysed: int = 0
    scan_ids: list[int] = field(default_factory=list)


def _label_for(folder: str) -> str | None:
    name = folder.upper()
    return name if name in Diagnosis.values else None


def _patient_for(path: Path) -> str:
    m = KERMANY_NAME.match(path.stem)
    if m:
        return f"KER-{int(m.group('patient'))}"
    return f"IMP-{path.stem}"[:64]


def dataset_files(root: Path, *, limit: int | None = None) -> tuple[list[DatasetFile], int]:
    """The importable files under ``root`` and how many were skipped for an unknown class.

    With ``limit``, take files round-robin across classes so a sample is balanced.
    """
    per_class: dict[str, list[DatasetFile]] = {}
    unsupported = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        label = _label_for(path.parent.name)
        if label is None:
            unsupported += 1
            continue
        per_class.setdefault(label, []).append(DatasetFile(path, label, _patient_for(path)))
    if limit is None:
        files = [f for label in sorted(per_class) for f in per_class[label]]
    else:
        interleaved = zip_longest(*(per_class[label] for label in sorted(per_class)))
        files = [f for group in interleaved for f in group if f is not None][:limit]
    return files, unsupported


def _case_for(identifier: str, *, user: Any, today: date) -> Case:
    patient = Patient.objects.filter(identifier=identifier).first()
    if patient is None:
        patient = patient_create(identifier=identifier, created_by=user, notes="Pseudonymous patient of an imported data set.")
    case = patient.cases.order_by("id").first()
    if case is None:
        case = case_create(patient=patient, eye=Case.Eye.OD, exam_date=today, created_by=user, notes=CASE_NOTE)
    return case


def _batches(items: list[DatasetFile], size: int) -> Iterator[list[DatasetFile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dataset_import(
    *,
    root: Path,
    uploaded_by: Any = None,
    limit: int | None = None,
    run_inference: bool = True,
    batch_size: int = 32,
    progress: Callable[[int, int, ImportResult], None] | None = None,
) -> ImportResult:
    """Register every image of a labelled folder as a scan with its folder's label as
    source label, then analyse each batch in bulk; safe to run again."""
    root = Path(root)
    if not root.is_dir():
        raise DomainError(f"{root} is not a folder.")
    files, unsupported = dataset_files(root, limit=limit)
    result = ImportResult(unsupported=unsupported)
    origin_base = f"data set folder {root.name}"
    today = date.today()
    done = 0
    for batch in _batches(files, batch_size):
        # One transaction per batch: the per-scan analysis that scan_submit queues
        # runs after commit and finds the scans already analysed by the bulk run.
        with transaction.atomic():
            new_ids: list[int] = []
            for item in batch:
                result.seen += 1
                data = item.path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                case = _case_for(item.patient_identifier, user=uploaded_by, today=today)
                if Scan.objects.filter(case=case, sha256=digest).exists():
                    result.skipped_existing += 1
                    continue
                try:
                    with transaction.atomic(), item.path.open("rb") as fh:
                        scan = scan_submit(
                            case=case,
                            file=fh,
                            uploaded_by=uploaded_by,
                            source_label=item.label,
                            source_label_origin=f"{origin_base}: {item.path.relative_to(root)}"[:120],
                        )
                except Conflict:
                    result.skipped_existing += 1
                    continue
                except DomainError as exc:
                    result.rejected.append((str(item.path.relative_to(root)), exc.message))
                    continue
                new_ids.append(scan.pk)
            if run_inference and new_ids:
                result.analysed += _predict(new_ids)
            result.created += len(new_ids)
            result.scan_ids.extend(new_ids)
        done += len(batch)
        if progress is not None:
            progress(done, len(files), result)
    return result


def _predict(scan_ids: list[int]) -> int:
    try:
        with transaction.atomic():
            return predict_scans(scan_ids=scan_ids)
    except Exception as exc:  # noqa: BLE001 - no model yet must not lose the import; scans stay queued
        logger.warning("bulk analysis of %d scans failed (%s: %s); they stay queued", len(scan_ids), type(exc).__name__, exc)
        return 0
