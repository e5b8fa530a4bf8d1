"""Uploads: a minimum B-scan size, and a stored image that keeps pixels only.

The derived PNG (what the viewer and the model read) must not carry anything of the
upload but its pixels: no metadata with a patient's name, no HTML of a polyglot.
"""
from __future__ import annotations

import io
import struct

import pytest
from django.urls import reverse
from PIL import Image, PngImagePlugin

from cases import services
from intake import services as intake_services
from cases.images import ImageRejected, inspect_and_convert
from tests.cases.conftest import upload
from tests.factories import bscan_image, encode_image

PHI = "SMITH_JOHN MRN12345 1952-03-04"
MAX_PIXELS = 40_000_000


def png_chunk_types(data: bytes) -> list[bytes]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


def assert_pixels_only(png: bytes) -> None:
    assert set(png_chunk_types(png)) == {b"IHDR", b"IDAT", b"IEND"}
    img = Image.open(io.BytesIO(png))
    img.load()
    assert not {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp"} & set(img.info)
    assert getattr(img, "text", {}) == {}
    for needle in (b"SMITH", b"MRN12345", b"1952-03-04", b"<html", b"<script"):
        assert needle not in png


# --- minimum size ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [(127, 496), (512, 127), (64, 48), (1, 1)])
def test_an_image_smaller_than_128_px_on_a_side_is_refused_with_the_minimum(size):
    with pytest.raises(ImageRejected) as info:
        inspect_and_convert(encode_image(Image.new("L", size, 30), "PNG"), max_pixels=MAX_PIXELS)
    w, h = size
    assert info.value.message == (
        f"The image is too small to be a B-scan ({w} × {h} px); the minimum is 128 × 128 px."
    )


def test_an_image_of_exactly_128_px_is_accepted():
    assert inspect_and_convert(encode_image(bscan_image(128, 128), "PNG"), max_pixels=MAX_PIXELS).width == 128


@pytest.mark.django_db
def test_the_upload_page_names_a_too_small_file_and_its_reason(client, clinician, case):
    client.force_login(clinician)
    response = client.post(
        reverse("cases:scan_upload", args=[case.pk]),
        {"files": [upload("thumb.png", encode_image(Image.new("L", (96, 96), 30), "PNG"))]},
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert "thumb.png" in text and "too small to be a B-scan" in text and "128 × 128 px" in text


@pytest.mark.django_db
def test_the_minimum_follows_the_setting(case, clinician, settings):
    settings.OCT_UPLOAD_MIN_SIDE_PX = 200
    report = intake_services.scans_upload(
        case=case, files=[upload("a.png", encode_image(bscan_image(160, 128), "PNG"))], uploaded_by=clinician
    )
    assert report.rejected == [("a.png", "The image is too small to be a B-scan (160 × 128 px); the minimum is 200 × 200 px.")]


# --- polyglots and metadata -------------------------------------------------------------

HTML = b"<html><body><script>fetch('/api/patients/').then(r=>r.text()).then(alert)</script></body></html>"


def jpeg_html_polyglot() -> bytes:
    """A valid JPEG whose comment segment and trailing bytes are an HTML page."""
    return encode_image(bscan_image(), "JPEG", comment=HTML) + HTML


@pytest.mark.django_db
def test_a_jpeg_html_polyglot_is_stored_as_a_clean_png(client, clinician, case):
    data = jpeg_html_polyglot()
    assert HTML in data and Image.open(io.BytesIO(data)).format == "JPEG"
    scan = services.scan_register(case=case, file=upload("scan.jpg", data), uploaded_by=clinician)
    with scan.image.open("rb") as fh:
        stored = fh.read()
    assert_pixels_only(stored)

    client.force_login(clinician)
    response = client.get(reverse("cases:scan_image", args=[scan.pk]))
    assert response["Content-Type"] == "image/png" and response["X-Content-Type-Options"] == "nosniff"
    assert b"<script" not in b"".join(response.streaming_content)
    original = client.get(reverse("cases:scan_image", args=[scan.pk]) + "?original=1")
    # The original is kept as uploaded, but only ever as a sandboxed, non-sniffed download.
    assert original["Content-Disposition"].startswith("attachment")
    assert original["Content-Security-Policy"].startswith("sandbox")


def _exif_with_phi() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = PHI  # ImageDescription
    exif[0x013B] = PHI  # Artist
    exif[0x9286] = PHI  # UserComment
    return exif.tobytes()


XMP = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{PHI}</dc:creator></x:xmpmeta>'.encode()
ICC = b"\x00\x00\x02\x0cfake-icc-profile " + PHI.encode() + b"\x00" * 64


def jpeg_with_metadata() -> bytes:
    return encode_image(bscan_image(), "JPEG", exif=_exif_with_phi(), icc_profile=ICC, xmp=XMP)


def png_with_metadata() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", PHI)
    info.add_text("Comment", PHI, zip=True)
    info.add_itxt("Description", PHI, lang="en", tkey="Description")
    return encode_image(bscan_image(), "PNG", pnginfo=info, exif=_exif_with_phi(), icc_profile=ICC)


def tiff_with_metadata() -> bytes:
    return encode_image(bscan_image(), "TIFF", exif=_exif_with_phi(), icc_profile=ICC)


@pytest.mark.parametrize("make", [jpeg_with_metadata, png_with_metadata, tiff_with_metadata],
                         ids=["jpeg", "png", "tiff"])
def test_metadata_with_a_patient_name_is_not_in_the_stored_image(make):
    data = make()
    assert PHI.encode() in data or PHI.encode() in data.replace(b"\x00", b"")  # the upload carries it
    assert_pixels_only(inspect_and_convert(data, max_pixels=MAX_PIXELS).png)


@pytest.mark.django_db
def test_an_upload_with_metadata_is_stored_and_served_without_it(client, clinician, case):
    scan = services.scan_register(case=case, file=upload("scan.png", png_with_metadata()), uploaded_by=clinician)
    client.force_login(clinician)
    served = b"".join(client.get(reverse("cases:scan_image", args=[scan.pk])).streaming_content)
    assert_pixels_only(served)
