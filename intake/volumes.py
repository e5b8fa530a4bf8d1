"""Submitting volumes: every B-scan of an acquisition, all or nothing.

``volume_submit`` records the volume (``cases``), then submits each B-scan through
``scan_submit`` (register, request the reading, open the review: one review for the
whole volume when it has more than one B-scan) in one transaction:
a refused slice or any failure leaves no volume, no scan, no review and no file.
``volume_import`` finds the examination itself when none is given (the receiver,
``import_volume`` without ``--case``): the device's patient id, keyed-hashed, names
the pseudonymous patient, so a later visit lands on the same patient.
``uploads_submit`` is the upload page's and the API's entry: images one by one as
before, volume files (DICOM, Heyex .vol, ZIP) each as one volume.
"""
from __future__ import annotations

from datetime import date
from typing import IO

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from cases.models import Case, Patient, Volume
from cases.services import (
    case_create,
    patient_create,
    scan_files_delete,
    upload_name,
    volume_create,
    volume_files_delete,
)
from octportal.errors import Conflict, DomainError

from . import deid
from .dicom import DicomInstance, dicom_read, dicom_volume, is_dicom
from .formats import looks_like_volume, read_bounded, volume_source_read
from . import services
from .services import UploadReport, scan_submit
from .source import LateralityMissing, VolumeRejected, VolumeSource

EYE_CHOICES = tuple(Case.Eye.values)
PATIENT_NOTE = "Pseudonymous patient of a device import: identifier is a keyed hash of the device's patient id."
CASE_NOTE = "Opened by a volume import."


def _laterality(source: VolumeSource, eye: str) -> str:
    eye = (eye or "").strip().upper()
    if eye and eye not in EYE_CHOICES:
        raise DomainError(f"Unknown eye '{eye}'; choose OD or OS.", errors={"eye": ["Choose OD or OS."]})
    if source.laterality is None:
        if not eye:
            raise LateralityMissing(
                f"{source.name}: the file does not record which eye it shows; choose the eye (OD or OS) and upload it again.",
                errors={"eye": ["Required: the file does not record the eye."]},
            )
        return eye
    if eye and eye != source.laterality:
        raise VolumeRejected(f"{source.name}: the file records {source.laterality}, but {eye} was chosen.")
    return source.laterality


def _check_patient(case: Case, source: VolumeSource) -> None:
    identifier = case.patient.identifier
    if source.patient_pseudonym and identifier.startswith(deid.PATIENT_PREFIX) and identifier != source.patient_pseudonym:
        raise Conflict(f"{source.name}: the file is of another patient than this examination's.")


def volume_submit(*, case: Case, source: VolumeSource, uploaded_by: AbstractBaseUser | None, eye: str = "") -> Volume:
    """Record ``source`` as a volume of ``case`` and submit each B-scan; all or nothing."""
    laterality = _laterality(source, eye)
    _check_patient(case, source)
    volume: Volume | None = None
    scans = []
    try:
        with transaction.atomic():
            volume = volume_create(
                case=case,
                source_format=source.source_format,
                laterality=laterality,
                slice_count=len(source.frames),
                sha256=source.sha256,
                original_name=source.name,
                uploaded_by=uploaded_by,
                localizer_png=source.localizer_png,
                **source.metadata(),
            )
            positions = source.slice_positions_mm or [None] * len(source.frames)
            for index, png in enumerate(source.frames):
                scans.append(scan_submit(
                    case=case,
                    file=ContentFile(png, name=f"slice-{index + 1:03d}.png"),
                    uploaded_by=uploaded_by,
                    volume=volume,
                    slice_index=index,
                    slice_position_mm=positions[index] if index < len(positions) else None,
                    request_analysis=False,
                    open_review=False,
                ))
            services.slices_open_review(scans=scans)
            services.slices_request_analysis(scans=scans)
    except BaseException:
        for scan in scans:
            scan_files_delete(scan=scan)
        if volume is not None:
            volume_files_delete(volume=volume)
        raise
    return volume


def _case_for(source: VolumeSource, *, laterality: str, uploaded_by: AbstractBaseUser | None) -> Case:
    if not source.patient_pseudonym:
        raise VolumeRejected(f"{source.name}: the file records no patient id; import it into an examination (--case).")
    patient = Patient.objects.filter(identifier=source.patient_pseudonym).first()
    if patient is None:
        patient = patient_create(identifier=source.patient_pseudonym, created_by=uploaded_by, notes=PATIENT_NOTE)
    exam_date: date = source.acquisition_date or timezone.localdate()
    case = (
        patient.cases.filter(eye=laterality, exam_date=exam_date).exclude(status=Case.Status.CLOSED).order_by("id").first()
    )
    if case is None:
        case = case_create(
            patient=patient, eye=laterality, exam_date=exam_date, created_by=uploaded_by, device=source.device[:120],
            notes=CASE_NOTE,
        )
    return case


def volume_import(
    *, source: VolumeSource, uploaded_by: AbstractBaseUser | None, case: Case | None = None, eye: str = ""
) -> Volume:
    """Submit ``source`` into ``case``, or into the examination its patient id and date name."""
    if case is not None:
        return volume_submit(case=case, source=source, uploaded_by=uploaded_by, eye=eye)
    laterality = _laterality(source, eye)
    with transaction.atomic():
        case = _case_for(source, laterality=laterality, uploaded_by=uploaded_by)
        return volume_submit(case=case, source=source, uploaded_by=uploaded_by, eye=laterality)


def volume_file_submit(*, case: Case | None, file: IO[bytes], uploaded_by: AbstractBaseUser | None, eye: str = "") -> Volume:
    """Read one volume file (DICOM, Heyex .vol, ZIP) and import it."""
    name = upload_name(file)
    source = volume_source_read(read_bounded(file), name=name)
    return volume_import(source=source, uploaded_by=uploaded_by, case=case, eye=eye)


def _dicom_groups(instances: list[DicomInstance]) -> list[list[DicomInstance]]:
    """Group one batch's DICOM files into series; each OP joins the series it belongs to."""
    groups: dict[str, list[DicomInstance]] = {}
    for inst in instances:
        if inst.kind == "OPT":
            groups.setdefault(inst.series_uid, []).append(inst)
    for inst in instances:
        if inst.kind != "OP":
            continue
        for members in groups.values():
            if inst.series_uid == members[0].series_uid or any(inst.sop_uid in m.referenced_uids for m in members):
                members.append(inst)
                break
        else:
            groups.setdefault(f"op:{inst.sop_uid}", []).append(inst)
    return list(groups.values())


def uploads_submit(
    *, case: Case, files: list[IO[bytes]], uploaded_by: AbstractBaseUser | None, eye: str = ""
) -> UploadReport:
    """Submit a mixed upload: images each on their own, each volume file (or DICOM series) as one volume."""
    if not files:
        return services.scans_upload(case=case, files=files, uploaded_by=uploaded_by)  # refuses, with the reason
    images: list[IO[bytes]] = []
    dicoms: list[DicomInstance] = []
    report = UploadReport()
    for file in files:
        name = upload_name(file)
        file.seek(0)
        head = file.read(132)
        file.seek(0)
        if not looks_like_volume(name, head):
            images.append(file)
            continue
        try:
            if is_dicom(head):
                dicoms.append(dicom_read(read_bounded(file), name=name))
                continue
            volume = volume_file_submit(case=case, file=file, uploaded_by=uploaded_by, eye=eye)
        except DomainError as exc:
            report.rejected.append((name, exc.message))
            continue
        _accept(report, volume)
    for group in _dicom_groups(dicoms):
        name = next((i.name for i in group if i.kind == "OPT"), group[0].name)
        try:
            volume = volume_submit(case=case, source=dicom_volume(group, name=name), uploaded_by=uploaded_by, eye=eye)
        except DomainError as exc:
            report.rejected.append((name, exc.message))
            continue
        _accept(report, volume)
    if images:
        lone = services.scans_upload(case=case, files=images, uploaded_by=uploaded_by)
        report.accepted.extend(lone.accepted)
        report.rejected.extend(lone.rejected)
    return report


def _accept(report: UploadReport, volume: Volume) -> None:
    report.volumes.append(volume)
    report.accepted.extend(volume.scans.order_by("slice_index"))
