"""Validation and conversion of uploaded images (pure functions, no database)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from cases.images import (
    BOMB_MESSAGE,
    CORRUPT_MESSAGE,
    ImageRejected,
    grey_png,
    human_size,
    inspect_and_convert,
    read_upload,
    slice_convert,
    window_to_uint8,
)
from tests.factories import bscan16_tiff, bscan_bytes, bscan_image, encode_image, png_declaring

MAX_PIXELS = 40_000_000


def convert(data: bytes, max_pixels: int = MAX_PIXELS):
    return inspect_and_convert(data, max_pixels=max_pixels)


def rejected(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(ImageRejected) as info:
        convert(data, max_pixels=max_pixels)
    return info.value.message


def decoded(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "BMP"])
def test_accepted_formats_convert_to_grey_png(fmt):
    result = convert(bscan_bytes(fmt, 160, 128))
    assert result.format == fmt
    assert (result.width, result.height) == (160, 128)
    out = decoded(result.png)
    assert out.format == "PNG" and out.mode == "L" and out.size == (160, 128)


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGB", "RGBA"])
def test_convertible_modes_become_grey(mode):
    result = convert(bscan_bytes("PNG", mode=mode))
    assert result.mode == mode
    assert decoded(result.png).mode == "L"


def test_format_is_detected_from_content_not_name():
    # The caller never passes a name: a PNG is a PNG whatever it was called.
    assert convert(bscan_bytes("PNG")).format == "PNG"
    assert convert(bscan_bytes("BMP")).format == "BMP"


def test_sha256_and_size_describe_the_original_bytes():
    data = bscan_bytes("JPEG")
    result = convert(data)
    import hashlib

    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)


def test_rgb_grey_content_keeps_its_intensities():
    grey = bscan_image(160, 128, seed=3)
    result = convert(encode_image(grey.convert("RGB"), "PNG"))
    assert np.array_equal(np.asarray(decoded(result.png)), np.asarray(grey))


def test_transparency_is_composited_onto_black():
    img = Image.new("LA", (128, 128), (200, 0))  # bright but fully transparent
    result = convert(encode_image(img, "PNG"))
    assert np.asarray(decoded(result.png)).max() == 0


@pytest.mark.parametrize("big_endian", [False, True])
def test_16bit_tiff_is_windowed_by_percentiles_not_divided_by_257(big_endian):
    data, arr = bscan16_tiff(160, 128, max_value=4095, hot_pixel=True, big_endian=big_endian)
    result = convert(data)
    assert result.mode in ("I;16", "I;16B")
    out = np.asarray(decoded(result.png))
    # Dividing by 257 would leave 12-bit data below 16 grey levels: nearly black.
    assert out.max() == 255
    assert out.min() == 0
    # One saturated specular pixel must not flatten the tissue into darkness.
    assert np.percentile(out, 99) > 200
    band_row = int(128 * 0.45)
    assert out[band_row, 100] > out[5, 100] + 100


def test_16bit_png_converts():
    arr = (np.arange(160 * 128).reshape(128, 160) * 3).astype(np.uint16)
    img = Image.frombytes("I;16", (160, 128), arr.astype("<u2").tobytes())
    out = np.asarray(decoded(convert(encode_image(img, "PNG")).png))
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("mode,dtype", [("I", np.int32), ("F", np.float32)])
def test_32bit_and_float_tiff_convert(mode, dtype):
    arr = np.linspace(-5.0, 1000.0, 160 * 128).reshape(128, 160).astype(dtype)
    img = Image.frombytes(mode, (160, 128), arr.tobytes())
    result = convert(encode_image(img, "TIFF"))
    assert result.mode == mode
    out = np.asarray(decoded(result.png))
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_window_handles_constant_and_non_finite_values():
    assert window_to_uint8(np.full((4, 4), 7, dtype=np.uint16)).max() == 0
    arr = np.array([[np.nan, 0.0], [1.0, np.inf]], dtype=np.float32)
    out = window_to_uint8(arr)
    assert out[0, 0] == 0 and out[1, 0] == 255
    with pytest.raises(ImageRejected, match="no finite pixel values"):
        window_to_uint8(np.full((2, 2), np.nan))


def test_exif_orientation_is_applied():
    img = bscan_image(160, 128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    result = convert(encode_image(img, "JPEG", exif=exif.tobytes()))
    assert (result.width, result.height) == (128, 160)


def test_original_bytes_are_not_modified():
    data = bscan_bytes("JPEG")
    copy = bytes(data)
    convert(data)
    assert data == copy


# --- rejections -----------------------------------------------------------------------


def test_truncated_jpeg_is_rejected_and_truncated_loading_stays_off():
    data = bscan_bytes("JPEG", 256, 200)
    assert rejected(data[: len(data) // 2]) == CORRUPT_MESSAGE
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_data_is_rejected():
    data = bytearray(bscan_bytes("PNG", 160, 128))
    data[120:160] = b"\x00" * 40
    assert rejected(bytes(data)) == CORRUPT_MESSAGE


def test_png_with_broken_header_is_named_corrupt():
    data = bytearray(bscan_bytes("PNG"))
    data[20] ^= 0xFF
    assert rejected(bytes(data)) == "The file looks like a PNG image but is corrupt and cannot be read."


@pytest.mark.parametrize(
    "data,kind",
    [
        (b"hello, this is a text file\n", "a text file"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF document"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "an HTML page"),
    ],
)
def test_documents_posing_as_images_are_named(data, kind):
    assert rejected(data) == f"The file is {kind}, not an image. Accepted formats: JPEG, PNG, TIFF or BMP."


def test_random_bytes_are_not_an_image():
    rng = np.random.default_rng(1)
    data = b"\x00\x01\xfe" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes()
    assert rejected(data) == "The file is not a recognised image. Accepted formats: JPEG, PNG, TIFF or BMP."


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "ICO"])
def test_other_image_formats_are_unsupported(fmt):
    assert rejected(bscan_bytes(fmt, 32, 32)) == (
        f"Unsupported image format {fmt}. Accepted formats: JPEG, PNG, TIFF or BMP."
    )


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_an_unsupported_mode(fmt):
    assert rejected(bscan_bytes(fmt, mode="CMYK")).startswith("Unsupported colour mode CMYK.")


def test_multi_frame_tiff_is_rejected():
    img = bscan_image()
    data = encode_image(img, "TIFF", save_all=True, append_images=[bscan_image(seed=9), bscan_image(seed=10)])
    assert rejected(data) == "The file holds 3 images (frames); upload each B-scan as a separate file."


def test_too_many_pixels_is_rejected_from_the_header():
    assert rejected(bscan_bytes("PNG", 300, 200), max_pixels=50_000) == (
        "The image has too many pixels (300 × 200 = 60,000); the limit is 50,000."
    )


def test_decompression_bomb_is_refused_without_decoding():
    assert rejected(png_declaring(30_000, 30_000), max_pixels=10**12) == BOMB_MESSAGE


def test_pillow_bomb_warning_is_treated_as_a_bomb():
    # Between Pillow's warning and error thresholds.
    assert rejected(png_declaring(10_000, 10_000), max_pixels=10**12) == BOMB_MESSAGE


def test_read_upload_refuses_empty_and_oversized_files():
    with pytest.raises(ImageRejected) as info:
        read_upload(io.BytesIO(b""), max_bytes=100)
    assert info.value.message == "The file is empty (0 bytes)."
    with pytest.raises(ImageRejected) as info:
        read_upload(io.BytesIO(b"x" * 101), max_bytes=100)
    assert info.value.message == "The file is too large (101 bytes); the limit is 100 bytes."


def test_read_upload_checks_declared_size_before_reading():
    class Huge(io.BytesIO):
        size = 10 * 1024 * 1024

        def read(self, *args):  # pragma: no cover - must not be called
            raise AssertionError("read before the size check")

    with pytest.raises(ImageRejected) as info:
        read_upload(Huge(), max_bytes=1024 * 1024)
    assert info.value.message == "The file is too large (10.0 MB); the limit is 1.0 MB."


def test_human_size():
    assert human_size(812) == "812 bytes"
    assert human_size(2048) == "2.0 KB"
    assert human_size(25 * 1024 * 1024) == "25.0 MB"


def test_a_volume_slice_png_without_metadata_is_its_own_grey_copy():
    grey = np.random.default_rng(3).integers(0, 256, (496, 512), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG", compress_level=1)
    png = buf.getvalue()
    converted = slice_convert(png, max_pixels=10**7)
    assert converted.png is png and (converted.width, converted.height, converted.mode) == (512, 496, "L")
    # Anything else (a PNG carrying text, 16-bit) is converted as an upload is: no metadata kept.
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "Doe^Jane")
    Image.fromarray(grey).save(buf, format="PNG", pnginfo=info)
    tagged = slice_convert(buf.getvalue(), max_pixels=10**7)
    assert tagged.png != buf.getvalue() and b"Doe" not in tagged.png
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(tagged.png))), grey)


@pytest.mark.parametrize("shape", [(496, 512), (496, 1536), (1, 1), (1, 9), (7, 1), (3, 300)])
def test_grey_png_is_a_lossless_png_without_metadata(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = 0, 255  # the filter's differences wrap around modulo 256
    png = grey_png(pixels)
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.mode == "L" and img.info == {} and img.size == shape[::-1]
        assert np.array_equal(np.asarray(img), pixels)
    assert slice_convert(png, max_pixels=10**7).png is png  # a volume reader's frame is its grey copy


def test_grey_png_refuses_anything_but_8_bit_grey():
    for bad in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 3), np.uint8), np.zeros(4, np.uint8)):
        with pytest.raises(ValueError):
            grey_png(bad)


def test_an_upload_s_grey_copy_has_the_pixels_of_the_upload():
    rgb = np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    converted = inspect_and_convert(buf.getvalue(), max_pixels=10**7)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(converted.png))), expected)
