"""Write-side services of clinical records: patients, cases (examinations), scans.

Views and API endpoints call these for patients and cases; scans are submitted
through ``intake.services``, which registers them here and then requests their
analysis and opens their review (the admin edits patients and cases for
corrections, but never adds scans).
"""
from __future__ import annotations

import hashlib
import logging
from datetime import date
from pathlib import PurePath
from typing import Any, IO, TypedDict, Unpack

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from octportal.errors import Conflict, DomainError

from . import images
from .models import Acknowledgement, Case, Patient, Scan, Volume

logger = logging.getLogger(__name__)

PATIENT_UPDATE_FIELDS = ("identifier", "sex", "birth_year", "notes")
CASE_UPDATE_FIELDS = ("eye", "exam_date", "device", "referring_clinician", "status", "notes")
# What full_clean does not look up again for a volume's B-scan: the foreign keys its caller
# passes as rows, and its uid (a fresh random UUID, unique by the database's constraint).
VOLUME_SLICE_CHECKED = ("case", "volume", "uploaded_by", "uid")


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(
            f"{'' if name == '__all__' else name + ': '}{' '.join(msgs)}" for name, msgs in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def _full_clean(obj: Any, *, exclude: tuple[str, ...] = (), validate_constraints: bool = True) -> None:
    """``full_clean()`` that raises the domain error the error handlers understand."""
    try:
        obj.full_clean(exclude=list(exclude) or None, validate_constraints=validate_constraints)
    except ValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "message_dict") else {"__all__": exc.messages}
        raise DomainError(_validation_message(exc), errors=errors) from exc


def _apply(obj: Any, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = set(data) - set(allowed)
    if unknown:
        raise DomainError(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    for name, value in data.items():
        setattr(obj, name, value)


# --- patients -------------------------------------------------------------------------


def patient_create(
    *,
    identifier: str,
    created_by: AbstractBaseUser | None,
    sex: str = "",
    birth_year: int | None = None,
    notes: str = "",
) -> Patient:
    """Register a pseudonymous patient."""
    patient = Patient(
        identifier=identifier.strip(), sex=sex, birth_year=birth_year, notes=notes, created_by=created_by
    )
    _full_clean(patient)
    patient.save()
    return patient


def patient_update(*, patient: Patient, data: dict[str, Any]) -> Patient:
    """Change a patient's identifier, sex, birth year or notes."""
    if "identifier" in data:
        data = {**data, "identifier": str(data["identifier"]).strip()}
    _apply(patient, data, PATIENT_UPDATE_FIELDS)
    _full_clean(patient)
    patient.save()
    return patient


# --- cases ----------------------------------------------------------------------------


def case_create(
    *,
    patient: Patient,
    eye: str,
    exam_date: date,
    created_by: AbstractBaseUser | None,
    device: str = "",
    referring_clinician: str = "",
    notes: str = "",
) -> Case:
    """Open an examination of one eye of a patient."""
    case = Case(
        patient=patient,
        eye=eye,
        exam_date=exam_date,
        device=device,
        referring_clinician=referring_clinician,
        notes=notes,
        created_by=created_by,
    )
    _full_clean(case)
    case.save()
    return case


def case_update(*, case: Case, data: dict[str, Any]) -> Case:
    """Change an examination's details or status."""
    _apply(case, data, CASE_UPDATE_FIELDS)
    _full_clean(case)
    case.save()
    return case


# --- scans ----------------------------------------------------------------------------


def upload_name(file: IO[bytes]) -> str:
    """The uploaded file's name as people named it (browsers may send paths)."""
    raw = str(getattr(file, "name", "") or "upload")
    return PurePath(raw.replace("\\", "/")).name[:255] or "upload"


def upload_sha256(file: IO[bytes]) -> str | None:
    """SHA-256 of a file within the size limit, or None (scan_register will reject it)."""
    max_bytes = settings.OCT_UPLOAD_MAX_BYTES
    size = getattr(file, "size", None)
    if size is not None and size > max_bytes:
        return None
    file.seek(0)
    data = file.read(max_bytes + 1)
    file.seek(0)
    if not data or len(data) > max_bytes:
        return None
    return hashlib.sha256(data).hexdigest()


def _duplicate_message(existing: Scan) -> str:
    return f"Duplicate: this image is already in this case (scan #{existing.pk}, {existing.original_name})."


def _lone_twin(case: Case, sha256: str) -> Scan | None:
    """The scan uploaded on its own into ``case`` with the same bytes, if any."""
    return Scan.objects.filter(case=case, sha256=sha256, volume__isnull=True).only("pk", "original_name").first()


def scan_files_delete(*, scan: Scan) -> None:
    """Delete a scan's stored files (best effort), e.g. after its row was rolled back."""
    for f in (scan.original, scan.image):
        if f and f.name:
            try:
                f.storage.delete(f.name)
            except OSError:  # pragma: no cover - best effort; the row is gone anyway
                logger.exception("could not delete %s", f.name)


class ScanDetails(TypedDict, total=False):
    """What a scan may carry beyond its file: a source label, and its place in a volume."""

    source_label: str
    source_label_origin: str
    volume: Volume | None
    slice_index: int | None
    slice_position_mm: float | None


def scan_register(
    *, case: Case, file: IO[bytes], uploaded_by: AbstractBaseUser | None, **details: Unpack[ScanDetails]
) -> Scan:
    """Validate one uploaded image and store it with its grey rendering.

    Raise ``ImageRejected`` (or ``Conflict`` for a duplicate, ``DomainError`` for a
    closed case) and leave nothing behind: no row and no file. Callers submit scans
    through ``intake.services.scan_submit``, which also queues the analysis. A B-scan
    of a volume (``volume`` and ``slice_index``) is not checked for duplicates by
    content: its volume was, as a whole.
    """
    if case.status == Case.Status.CLOSED:
        raise Conflict("This case is closed; reopen it before adding scans.")
    volume = details.get("volume")
    if volume is not None and volume.case_id != case.pk:
        raise DomainError("The volume belongs to another examination.")
    name = upload_name(file)
    data = images.read_upload(file, max_bytes=settings.OCT_UPLOAD_MAX_BYTES)
    # The minimum size refuses stray tiny images; a volume's B-scans were checked as a volume.
    if volume is None:
        converted = images.inspect_and_convert(
            data, max_pixels=settings.OCT_UPLOAD_MAX_PIXELS, min_side=settings.OCT_UPLOAD_MIN_SIDE_PX
        )
    else:
        converted = images.slice_convert(data, max_pixels=settings.OCT_UPLOAD_MAX_PIXELS)
    if volume is None and (existing := _lone_twin(case, converted.sha256)) is not None:
        raise Conflict(_duplicate_message(existing))

    scan = Scan(
        case=case,
        sha256=converted.sha256,
        original_name=name,
        format=converted.format,
        original_mode=converted.mode,
        file_size=converted.size,
        width=converted.width,
        height=converted.height,
        colour_saturation=converted.saturation,
        uploaded_by=uploaded_by,
        **details,
    )
    try:
        # A volume's B-scan needs no savepoint of its own: its volume is stored in one
        # transaction, all or nothing (intake.volumes.volume_submit); two statements saved.
        with transaction.atomic(savepoint=volume is None):
            # The stored name carries the detected format's extension, never the uploaded one.
            if settings.OCT_KEEP_UPLOADED_FILES:
                scan.original.save("original" + converted.extension, ContentFile(data), save=False)
            scan.image.save("image.png", ContentFile(converted.png), save=False)
            if volume is None:
                _full_clean(scan)
            else:
                # A volume's B-scans: the examination, volume and uploader are rows in hand,
                # the uid is new and the slice positions are unique by construction and by
                # the database's constraints; checking them in Python too cost six queries
                # per B-scan.
                _full_clean(scan, exclude=VOLUME_SLICE_CHECKED, validate_constraints=False)
            scan.save()
    except (IntegrityError, DomainError) as exc:
        # Lost a race with a concurrent upload of the same image into this case: the
        # unique constraint fired on insert, or full_clean saw a row committed after
        # our first look.
        scan_files_delete(scan=scan)
        existing = _lone_twin(case, converted.sha256) if volume is None else None
        if existing is not None:
            raise Conflict(_duplicate_message(existing)) from exc
        raise
    except BaseException:
        scan_files_delete(scan=scan)
        raise
    return scan


# --- acknowledgements -----------------------------------------------------------------


def scan_acknowledge(
    *, scan: Scan, user: AbstractBaseUser, action: str, referred_to: str = "", note: str = ""
) -> Acknowledgement:
    """Record that ``user`` has seen the scan's result (or referred the patient to someone);
    the audit log keeps who and when."""
    referred_to = referred_to.strip()
    if action == Acknowledgement.Action.REFERRED and not referred_to:
        raise DomainError("Say whom the patient was referred to.", errors={"referred_to": ["This field is required."]})
    ack = Acknowledgement(scan=scan, action=action, referred_to=referred_to, note=note.strip(), acknowledged_by=user)
    _full_clean(ack)
    ack.save()
    return ack


# --- volumes --------------------------------------------------------------------------


def volume_sha256_exists(*, case: Case, sha256: str) -> Volume | None:
    """The volume of ``case`` received from the same source bytes, if any."""
    return Volume.objects.filter(case=case, sha256=sha256).first()


def volume_create(
    *,
    case: Case,
    source_format: str,
    laterality: str,
    slice_count: int,
    sha256: str,
    original_name: str,
    uploaded_by: AbstractBaseUser | None,
    localizer_png: bytes | None = None,
    **metadata: Any,
) -> Volume:
    """Record a volume of ``case`` (its B-scans are registered after it with ``scan_register``).

    ``metadata``: modality, scan_pattern, acquisition_date, device, pixel spacings,
    slice_spacing_mm, removed_tags. Refuse a closed case, an eye other than the
    examination's, and a volume already received into this case.
    """
    if case.status == Case.Status.CLOSED:
        raise Conflict("This case is closed; reopen it before adding scans.")
    if laterality != case.eye:
        raise DomainError(
            f"The volume is of the {Case.Eye(laterality).label} but this examination is of the "
            f"{Case.Eye(case.eye).label}; upload it into an examination of that eye."
        )
    existing = volume_sha256_exists(case=case, sha256=sha256)
    if existing is not None:
        raise Conflict(f"Duplicate: this volume is already in this case (volume #{existing.pk}, {existing.original_name}).")
    volume = Volume(
        case=case,
        source_format=source_format,
        laterality=laterality,
        slice_count=slice_count,
        sha256=sha256,
        original_name=original_name[:255],
        uploaded_by=uploaded_by,
        **metadata,
    )
    try:
        with transaction.atomic():
            if localizer_png:
                volume.localizer.save("localizer.png", ContentFile(localizer_png), save=False)
            _full_clean(volume)
            volume.save()
    except BaseException:
        volume_files_delete(volume=volume)
        raise
    return volume


def volume_files_delete(*, volume: Volume) -> None:
    """Delete a volume's localizer file (best effort), e.g. after its rows were rolled back."""
    if volume.localizer and volume.localizer.name:
        try:
            volume.localizer.storage.delete(volume.localizer.name)
        except OSError:  # pragma: no cover - best effort
            logger.exception("could not delete %s", volume.localizer.name)
