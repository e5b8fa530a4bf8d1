"""Submitting scans: the one orchestrating service above records, reading and grading.

``scan_submit`` registers a scan (``cases``), requests its automated reading
(``inference``) and opens its review at quality control (``verification``) in one
transaction; a B-scan of a volume of more than one opens (or joins) its volume's one
review instead (``verification.services.review_open``). The upload page, the API and the data-set importer all call it, so the
layers below never call each other upwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Unpack

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from cases.models import Case, Scan, Volume
from cases.services import ScanDetails, scan_files_delete, scan_register, upload_name, upload_sha256
from inference.services import scan_request_analysis, scans_request_analysis
from octportal.errors import Conflict, DomainError
from verification.services import review_open


@dataclass
class UploadReport:
    """Outcome of a batch upload: what was stored and what was refused, and why."""

    accepted: list[Scan] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)


def scan_submit(
    *,
    case: Case,
    file: IO[bytes],
    uploaded_by: AbstractBaseUser | None,
    request_analysis: bool = True,
    open_review: bool = True,
    **details: Unpack[ScanDetails],
) -> Scan:
    """Register one image into ``case``, queue its analysis and open its review.

    ``details``: the source label and, for a volume's B-scan, its volume and position
    (``cases.services.ScanDetails``). All or nothing: a refused image (``DomainError``)
    or any later failure leaves no row and no file. The analysis is enqueued only once
    the transaction commits; ``request_analysis=False`` leaves that to the caller, which
    then requests it for many scans at once (``slices_request_analysis``);
    ``open_review=False`` leaves the review to the caller too (``slices_open_review``:
    a volume's B-scans share one).
    """
    # A volume's B-scan is submitted inside its volume's transaction: all or nothing, so no
    # savepoint of its own (two statements per B-scan).
    with transaction.atomic(savepoint=details.get("volume") is None):
        scan = scan_register(case=case, file=file, uploaded_by=uploaded_by, **details)
        try:
            if open_review:
                review_open(scan=scan)
            if request_analysis:
                scan_request_analysis(scan=scan)
        except BaseException:
            scan_files_delete(scan=scan)
            raise
    return scan


def slices_open_review(*, scans: list[Scan]) -> None:
    """Open the review of a volume's B-scans: one for the volume (of more than one B-scan),
    found or made once instead of once per B-scan."""
    if scans:
        review_open(scan=scans[0])


def slices_request_analysis(*, scans: list[Scan]) -> None:
    """Request the reading of a volume's B-scans together: model batches, in slice order."""
    scans_request_analysis(scan_ids=[scan.pk for scan in scans])


def scans_upload(*, case: Case, files: list[IO[bytes]], uploaded_by: AbstractBaseUser | None) -> UploadReport:
    """Submit several images into a case; each file succeeds or fails on its own."""
    max_files = settings.OCT_UPLOAD_MAX_FILES
    if not files:
        raise DomainError("Choose at least one image to upload.")
    if len(files) > max_files:
        raise DomainError(f"Too many files in one upload ({len(files)}); the limit is {max_files}.")
    report = UploadReport()
    seen: dict[str, str] = {}
    for file in files:
        name = upload_name(file)
        try:
            # Twins within the batch are caught before touching storage.
            digest = upload_sha256(file)
            if digest is not None and digest in seen:
                raise Conflict(f"Duplicate: the same image appears earlier in this upload ({seen[digest]}).")
            scan = scan_submit(case=case, file=file, uploaded_by=uploaded_by)
        except DomainError as exc:
            report.rejected.append((name, exc.message))
            continue
        seen[scan.sha256] = name
        report.accepted.append(scan)
    return report
