"""Services of clinical records: patients, cases, scan registration and batch upload."""
from __future__ import annotations

from datetime import date
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
    Scan.objects.create(
        case=other, sha256=scan.sha256, original="x.png", image="y.png", original_name="x",
        format="PNG", original_mode="L", file_size=1, width=1, height=1,
    )


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


def test_scan_register_stores_original_and_grey_png_and_queues_analysis(case, clinician, media_root):
    data = bscan_bytes("JPEG", 160, 128)
    with mock.patch("inference.services.scan_request_analysis", wraps=None) as request_analysis:
        scan = services.scan_register(case=case, file=upload("eye.jpg", data), uploaded_by=clinician)
    request_analysis.assert_called_once_with(scan=scan)
    scan.refresh_from_db()
    assert scan.original.read() == data
    assert scan.original.name.endswith(".jpg") and scan.image.name.endswith(".png")
    assert (scan.format, scan.original_mode, scan.width, scan.height) == ("JPEG", "L", 160, 128)
    assert scan.original_name == "eye.jpg" and scan.uploaded_by == clinician
    assert scan.file_size == len(data)
    assert len(stored_files(media_root)) == 2


def test_scan_register_runs_the_real_analysis_hook(case, clinician, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        scan = services.scan_register(case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician)
    scan.refresh_from_db()
    assert scan.status in Scan.Status.values


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


# --- scans_upload: the bad-upload corpus ----------------------------------------------


def multi_frame_tiff() -> bytes:
    return encode_image(bscan_image(), "TIFF", save_all=True, append_images=[bscan_image(seed=7)])


def truncated_jpeg() -> bytes:
    data = bscan_bytes("JPEG", 256, 200)
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    data = bytearray(bscan_bytes("PNG", 160, 128))
    data[120:160] = b"\x00" * 40
    return bytes(data)


BAD_UPLOADS = [
    ("empty.jpg", lambda: b"", "The file is empty (0 bytes)."),
    ("notes.jpg", lambda: b"patient notes, not an image\n",
     f"The file is a text file, not an image. Accepted formats: {ACCEPTED}."),
    ("half.jpg", truncated_jpeg, CORRUPT_MESSAGE),
    ("broken.png", corrupt_png, CORRUPT_MESSAGE),
    ("anim.gif", lambda: bscan_bytes("GIF"), f"Unsupported image format GIF. Accepted formats: {ACCEPTED}."),
    ("photo.webp", lambda: bscan_bytes("WEBP"), f"Unsupported image format WEBP. Accepted formats: {ACCEPTED}."),
    ("print.jpg", lambda: bscan_bytes("JPEG", mode="CMYK"),
     "Unsupported colour mode CMYK. OCT B-scans are greyscale: accepted are grey (8, 16 or 32-bit), "
     "palette, RGB and RGBA images."),
    ("volume.tif", multi_frame_tiff, "The file holds 2 images (frames); upload each B-scan as a separate file."),
    ("bomb.png", lambda: png_declaring(30_000, 30_000), BOMB_MESSAGE),
    ("page.jpg", lambda: b"<!DOCTYPE html><html><script>alert(1)</script></html>",
     f"The file is an HTML page, not an image. Accepted formats: {ACCEPTED}."),
    ("drawing.jpg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>',
     f"The file is an SVG drawing, not an image. Accepted formats: {ACCEPTED}."),
    ("report.jpg", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\n",
     f"The file is a PDF document, not an image. Accepted formats: {ACCEPTED}."),
    ("headless.png", lambda: bytes([b ^ 0xFF if i == 20 else b for i, b in enumerate(bscan_bytes("PNG"))]),
     "The file looks like a PNG image but is corrupt and cannot be read."),
]


@pytest.mark.parametrize("name,make,message", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_upload_is_rejected_with_reason_and_leaves_nothing(name, make, message, case, clinician, media_root):
    good = upload("good.png", bscan_bytes("PNG", seed=1))
    report = services.scans_upload(case=case, files=[upload(name, make()), good], uploaded_by=clinician)
    assert report.rejected == [(name, message)]
    assert [s.original_name for s in report.accepted] == ["good.png"]
    assert list(Scan.objects.values_list("original_name", flat=True)) == ["good.png"]
    assert len(stored_files(media_root)) == 2  # the good file's original and grey PNG only


def test_too_large_file_is_rejected(case, clinician, media_root, settings):
    settings.OCT_UPLOAD_MAX_BYTES = 20_000
    small = encode_image(Image.new("L", (128, 128), 20), "PNG")
    big = bscan_bytes("BMP", 160, 128)
    report = services.scans_upload(
        case=case, files=[upload("big.bmp", big), upload("small.png", small)], uploaded_by=clinician
    )
    assert report.rejected == [("big.bmp", f"The file is too large ({len(big) / 1024:.1f} KB); the limit is 19.5 KB.")]
    assert [s.original_name for s in report.accepted] == ["small.png"]
    assert len(stored_files(media_root)) == 2


def test_too_many_pixels_is_rejected(case, clinician, media_root, settings):
    settings.OCT_UPLOAD_MAX_PIXELS = 20_000
    report = services.scans_upload(
        case=case,
        files=[upload("wide.png", bscan_bytes("PNG", 300, 200)), upload("ok.png", bscan_bytes("PNG", 128, 128))],
        uploaded_by=clinician,
    )
    assert report.rejected == [("wide.png", "The image has too many pixels (300 × 200 = 60,000); the limit is 20,000.")]
    assert [s.original_name for s in report.accepted] == ["ok.png"]
    assert len(stored_files(media_root)) == 2


def test_duplicate_of_a_scan_already_in_the_case_is_rejected(case, clinician, media_root):
    data = bscan_bytes("PNG", seed=5)
    first = services.scan_register(case=case, file=upload("first.png", data), uploaded_by=clinician)
    report = services.scans_upload(
        case=case, files=[upload("again.png", data), upload("new.png", bscan_bytes(seed=6))], uploaded_by=clinician
    )
    assert report.rejected == [
        ("again.png", f"Duplicate: this image is already in this case (scan #{first.pk}, first.png).")
    ]
    assert Scan.objects.count() == 2
    assert len(stored_files(media_root)) == 4


def test_duplicate_within_one_batch_is_rejected(case, clinician, media_root):
    data = bscan_bytes("PNG", seed=8)
    report = services.scans_upload(
        case=case,
        files=[upload("a.png", data), upload("b.png", bscan_bytes(seed=9)), upload("a-copy.png", data)],
        uploaded_by=clinician,
    )
    assert report.rejected == [("a-copy.png", "Duplicate: the same image appears earlier in this upload (a.png).")]
    assert sorted(s.original_name for s in report.accepted) == ["a.png", "b.png"]
    assert len(stored_files(media_root)) == 4


def test_empty_batch_and_too_many_files_are_refused(case, clinician, settings):
    with pytest.raises(DomainError, match="at least one image"):
        services.scans_upload(case=case, files=[], uploaded_by=clinician)
    settings.OCT_UPLOAD_MAX_FILES = 2
    with pytest.raises(DomainError, match=r"Too many files in one upload \(3\); the limit is 2."):
        services.scans_upload(
            case=case, files=[upload(f"{i}.png", bscan_bytes(seed=i)) for i in range(3)], uploaded_by=clinician
        )
    assert not Scan.objects.exists()


def test_every_accepted_format_goes_through_in_one_batch(case, clinician):
    files = [upload(f"s.{fmt.lower()}", bscan_bytes(fmt, seed=i)) for i, fmt in enumerate(["JPEG", "PNG", "TIFF", "BMP"])]
    files.append(upload("deep.tif", bscan16_tiff()[0]))
    report = services.scans_upload(case=case, files=files, uploaded_by=clinician)
    assert report.rejected == []
    assert sorted(s.format for s in report.accepted) == ["BMP", "JPEG", "PNG", "TIFF", "TIFF"]
    for scan in report.accepted:
        assert scan.status in Scan.Status.values
