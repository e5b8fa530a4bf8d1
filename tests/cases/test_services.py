"""Services of clinical records: patients, cases and scan registration."""
from __future__ import annotations

from datetime import date
from pathlib import PurePath
from unittest import mock

import pytest
from PIL import Image
from django.db import IntegrityError, transaction

from cases import services
from cases.images import BOMB_MESSAGE, CORRUPT_MESSAGE
from cases.models import Case, Patient, Scan
from octportal.errors import Conflict, DomainError
from tests.cases.conftest import stored_files, upload
from tests.factories import (
    CaseFactory,
    PatientFactory,
    ScanFactory,
    bscan16_tiff,
    bscan_bytes,
    bscan_image,
    encode_image,
    png_declaring,
)

ACCEPTED = "JPEG, PNG, TIFF or BMP"


# --- models and constraints -----------------------------------------------------------


def test_same_image_cannot_be_stored_twice_in_a_case(db):
    scan = ScanFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Scan.objects.create(
            case=scan.case, sha256=scan.sha256, original="x.png", image="y.png", original_name="x",
            format="PNG", original_mode="L", file_size=1, width=1, height=1,
        )


def test_same_image_may_be_in_two_cases(db):
    scan = ScanFactory()
    other = CaseFactory(patient=scan.case.patient)
    twin = Scan.objects.create(
        case=other, sha256=scan.sha256, original="x.png", image="y.png", original_name="x",
        format="PNG", original_mode="L", file_size=1, width=1, height=1,
    )
    assert Scan.objects.filter(sha256=scan.sha256).count() == 2
    assert {scan.case_id, twin.case_id} == {scan.case_id, other.pk}


def test_scan_size_must_be_positive(db):
    case = CaseFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Scan.objects.create(
            case=case, sha256="a" * 64, original="x.png", image="y.png", original_name="x",
            format="PNG", original_mode="L", file_size=1, width=0, height=1,
        )


def test_patient_birth_year_must_be_plausible(db):
    with pytest.raises(IntegrityError), transaction.atomic():
        Patient.objects.create(identifier="P-X", birth_year=1800)


# --- patients and cases ---------------------------------------------------------------


def test_patient_create_strips_identifier_and_records_author(clinician):
    patient = services.patient_create(identifier="  P-1 ", sex="F", birth_year=1950, created_by=clinician)
    assert patient.pk and patient.identifier == "P-1" and patient.created_by == clinician


def test_patient_create_refuses_duplicate_identifier(clinician):
    services.patient_create(identifier="P-1", created_by=clinician)
    with pytest.raises(DomainError) as info:
        services.patient_create(identifier="P-1", created_by=clinician)
    assert "identifier" in info.value.errors
    assert Patient.objects.count() == 1


def test_patient_create_refuses_implausible_birth_year(clinician):
    with pytest.raises(DomainError):
        services.patient_create(identifier="P-2", birth_year=1700, created_by=clinician)
    assert not Patient.objects.exists()


def test_patient_update_changes_allowed_fields_only(db):
    patient = PatientFactory()
    services.patient_update(patient=patient, data={"notes": "seen", "birth_year": 1960})
    patient.refresh_from_db()
    assert (patient.notes, patient.birth_year) == ("seen", 1960)
    with pytest.raises(DomainError, match="cannot be changed: created_by"):
        services.patient_update(patient=patient, data={"created_by": None})


def test_case_create_and_update(clinician):
    patient = PatientFactory()
    case = services.case_create(patient=patient, eye="OS", exam_date=date(2026, 1, 5), created_by=clinician)
    assert case.status == Case.Status.OPEN
    services.case_update(case=case, data={"status": Case.Status.CLOSED, "device": "Spectralis"})
    case.refresh_from_db()
    assert case.status == Case.Status.CLOSED and case.device == "Spectralis"


def test_case_create_refuses_unknown_eye(clinician):
    with pytest.raises(DomainError):
        services.case_create(patient=PatientFactory(), eye="XX", exam_date=date(2026, 1, 5), created_by=clinician)


# --- scan_register --------------------------------------------------------------------


def test_scan_register_stores_original_and_grey_png_and_queues_nothing(case, clinician, media_root):
    data = bscan_bytes("JPEG", 160, 128)
    with mock.patch("inference.services.queue.scan_request_analysis") as request_analysis:
        scan = services.scan_register(case=case, file=upload("eye.jpg", data), uploaded_by=clinician)
    request_analysis.assert_not_called()
    scan.refresh_from_db()
    assert scan.original.read() == data
    assert scan.original.name.endswith(".jpg") and scan.image.name.endswith(".png")
    assert (scan.format, scan.original_mode, scan.width, scan.height) == ("JPEG", "L", 160, 128)
    assert scan.original_name == "eye.jpg" and scan.uploaded_by == clinician
    assert scan.file_size == len(data)
    assert scan.status == Scan.Status.RECEIVED and scan.colour_saturation == 0.0
    assert len(stored_files(media_root)) == 2


def test_stored_name_uses_detected_format_not_uploaded_extension(case, clinician):
    scan = services.scan_register(case=case, file=upload("trick.html", bscan_bytes("PNG")), uploaded_by=clinician)
    assert scan.original.name.endswith(".png")
    assert scan.original_name == "trick.html"


def test_browser_paths_are_reduced_to_the_file_name(case, clinician):
    scan = services.scan_register(
        case=case, file=upload("C:\\scans\\left\\b1.png", bscan_bytes()), uploaded_by=clinician
    )
    assert scan.original_name == "b1.png"


def test_scan_register_keeps_source_label(case, clinician):
    scan = services.scan_register(
        case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician,
        source_label="CNV", source_label_origin="dataset folder",
    )
    assert (scan.source_label, scan.source_label_origin) == ("CNV", "dataset folder")


def test_16bit_tiff_upload_is_converted(case, clinician):
    data, _ = bscan16_tiff()
    scan = services.scan_register(case=case, file=upload("deep.tif", data), uploaded_by=clinician)
    assert scan.original_mode == "I;16" and scan.format == "TIFF"
    assert scan.original.read() == data
    from PIL import Image

    with Image.open(scan.image.open("rb")) as img:
        assert img.mode == "L" and img.format == "PNG"


def test_closed_case_refuses_uploads(clinician, media_root):
    case = CaseFactory(status=Case.Status.CLOSED)
    with pytest.raises(Conflict, match="closed"):
        services.scan_register(case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician)
    assert not Scan.objects.exists() and stored_files(media_root) == []


def test_failed_database_write_leaves_no_files(case, clinician, media_root):
    with mock.patch.object(Scan, "save", side_effect=RuntimeError("disk full")):
        with pytest.raises(RuntimeError):
            services.scan_register(case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician)
    assert not Scan.objects.exists()
    assert stored_files(media_root) == []


def test_lost_unique_race_is_a_duplicate_and_leaves_no_files(case, clinician, media_root):
    """Another request stores the same image between our check and our insert."""
    data = bscan_bytes()
    first = services.scan_register(case=case, file=upload("first.png", data), uploaded_by=clinician)
    before = stored_files(media_root)
    real_filter = Scan.objects.filter
    calls = {"n": 0}

    def blind_first_lookup(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the pre-check does not see the concurrent row
            return real_filter(pk=-1)
        return real_filter(*args, **kwargs)

    with mock.patch.object(Scan.objects, "filter", side_effect=blind_first_lookup), \
         mock.patch.object(Scan, "full_clean"):
        with pytest.raises(Conflict) as info:
            services.scan_register(case=case, file=upload("second.png", data), uploaded_by=clinician)
    assert info.value.message == f"Duplicate: this image is already in this case (scan #{first.pk}, first.png)."
    assert Scan.objects.count() == 1
    assert stored_files(media_root) == before


def test_by_default_the_uploaded_bytes_are_not_kept(case, clinician, media_root, settings):
    settings.OCT_KEEP_UPLOADED_FILES = False
    scan = services.scan_register(case=case, file=upload("SMITH_JOHN.jpg", bscan_bytes("JPEG", 160, 128)),
                                  uploaded_by=clinician)
    assert not scan.original
    assert [p.name for p in stored_files(media_root)] == [PurePath(scan.image.name).name]
