"""Intake: submitting scans (register, queue the analysis, open the review) and batch upload."""
from __future__ import annotations

from unittest import mock

import pytest
from PIL import Image

from cases.images import BOMB_MESSAGE, CORRUPT_MESSAGE
from cases.models import Scan
from intake import services
from octportal.errors import DomainError
from tests.cases.conftest import case, media_root, stored_files, upload  # noqa: F401 - fixtures
from tests.factories import CaseFactory, bscan16_tiff, bscan_bytes, bscan_image, encode_image, png_declaring
from verification.models import Review

ACCEPTED = "JPEG, PNG, TIFF or BMP"


def test_scan_submit_registers_queues_analysis_and_opens_review(case, clinician, media_root):
    data = bscan_bytes("JPEG", 160, 128)
    with mock.patch("intake.services.scan_request_analysis") as request_analysis:
        scan = services.scan_submit(case=case, file=upload("eye.jpg", data), uploaded_by=clinician)
    request_analysis.assert_called_once_with(scan=scan)
    review = Review.objects.get(scan=scan)
    assert review.stage == Review.Stage.QUALITY_CONTROL and review.required_grades == 2
    assert len(stored_files(media_root)) == 2


def test_scan_submit_runs_the_real_analysis_hook(case, clinician, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        scan = services.scan_submit(case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician)
    scan.refresh_from_db()
    assert scan.status != Scan.Status.RECEIVED


def test_failure_after_registration_leaves_no_row_no_review_and_no_files(case, clinician, media_root):
    with mock.patch("intake.services.scan_request_analysis", side_effect=RuntimeError("broker exploded")):
        with pytest.raises(RuntimeError):
            services.scan_submit(case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician)
    assert not Scan.objects.exists() and not Review.objects.exists()
    assert stored_files(media_root) == []


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
    first = services.scan_submit(case=case, file=upload("first.png", data), uploaded_by=clinician)
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
