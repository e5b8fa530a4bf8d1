"""Validate uploaded B-scan images and convert them for the pipeline and viewer.

Pure functions over bytes: no ORM, no storage. ``read_upload`` bounds what is read
into memory; ``inspect_and_convert`` decides by content (never by file name) whether
the bytes are an acceptable image and returns the 8-bit grey PNG the model and the
viewer use. The original bytes are never modified.

Decisions (each rejection raises ``ImageRejected`` with a message for people):

* Formats: JPEG, PNG, TIFF, BMP, detected from the content. Anything else that
  Pillow recognises (GIF, WebP, ...) is "unsupported format"; documents posing as
  images (PDF, SVG, HTML, text) are named as such.
* Modes accepted: ``1``, ``L``, ``P``, ``PA``, ``LA``, ``RGB``, ``RGBA``, ``RGBX``,
  16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``), 32-bit ``I`` and ``F``.
  Rejected: ``CMYK`` (a print colour model: turning it into grey needs a colour
  profile, and OCT devices never produce it, so it signals a file that went through
  a print workflow), ``YCbCr``, ``LAB``, ``HSV`` and any other mode.
* Multi-frame files (multi-page TIFF, animated PNG, MPO) are rejected: a TIFF stack
  is usually a whole volume, and silently keeping its first frame would register a
  different image than the clinician meant. Upload each B-scan as its own file.
* Transparency is composited onto black (the background of an OCT B-scan).
* Images smaller than ``MIN_SIDE_PX`` (128 px) on either side are refused: no OCT
  device exports a B-scan that small (they are 496 to 1024 px tall), so such a file is
  a thumbnail, an icon or a crop, and the model's input alone is 224 px.
* EXIF orientation is applied before conversion.
* The derived PNG is rebuilt from decoded pixels alone: no EXIF, XMP, ICC profile or
  text chunk of the upload reaches it, and neither do bytes appended to or hidden in
  the original (a JPEG+HTML polyglot). The original file is kept as uploaded (its
  SHA-256 is the scan's identity) and only ever served as a download with
  ``nosniff`` and a sandbox CSP.
* 16-bit, 32-bit and float images are windowed between the 0.1th and 99.9th
  percentiles. A 16-bit OCT export rarely spans 0..65535: detector data often lives
  in 12 bits (0..4095) and a few specular pixels (the RPE, reflections) are far
  brighter than the tissue. Dividing by 257 would give an almost black image, and a
  plain min/max stretch lets one hot pixel flatten everything else.
"""
from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from octportal.errors import DomainError

from .pixels import colour_saturation

ACCEPTED_FORMATS = ("JPEG", "PNG", "TIFF", "BMP")
ACCEPTED_FORMATS_TEXT = "JPEG, PNG, TIFF or BMP"
# MPO is how Pillow names a JPEG carrying extra "multi-picture" data; one frame is a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
EXTENSION_BY_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp"}

GREY_MODES = frozenset({"1", "L"})
ALPHA_OR_PALETTE_MODES = frozenset({"P", "PA", "LA", "RGBA", "La"})
COLOUR_MODES = frozenset({"RGB", "RGBX"})
HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
ACCEPTED_MODES = GREY_MODES | ALPHA_OR_PALETTE_MODES | COLOUR_MODES | HIGH_DEPTH_MODES

WINDOW_PERCENTILES = (0.1, 99.9)
# Smallest width and height accepted (settings.OCT_UPLOAD_MIN_SIDE_PX overrides it).
MIN_SIDE_PX = 128

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Magic numbers of the accepted formats: a file that starts like one of them but
# that Pillow cannot open is corrupt, not "some other kind of file".
_MAGIC = (
    (PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class ImageRejected(DomainError):
    """An uploaded file is not an acceptable B-scan; ``message`` says why."""

    status_code = 400


@dataclass(frozen=True)
class ConvertedImage:
    """What validation learnt about an upload, and its 8-bit grey PNG rendering."""

    sha256: str
    format: str
    mode: str
    width: int
    height: int
    size: int
    png: bytes
    saturation: float  # colour saturation of the upload, which the grey rendering loses

    @property
    def extension(self) -> str:
        return EXTENSION_BY_FORMAT[self.format]


def human_size(n: int) -> str:
    """Format a byte count for people: ``812 bytes``, ``3.4 KB``, ``25.0 MB``."""
    if n < 1024:
        return f"{n:,} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def read_upload(file: IO[bytes], *, max_bytes: int) -> bytes:
    """Read an uploaded file, refusing empty files and files over ``max_bytes``.

    The declared size is checked first, and never more than ``max_bytes + 1`` bytes
    are read, so an oversized upload is not pulled into memory.
    """
    declared = getattr(file, "size", None)
    if declared is not None and declared > max_bytes:
        raise ImageRejected(_too_large(declared, max_bytes))
    if hasattr(file, "seek"):
        file.seek(0)
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageRejected(_too_large(declared or len(data), max_bytes))
    if not data:
        raise ImageRejected("The file is empty (0 bytes).")
    return data


def _too_large(size: int, limit: int) -> str:
    return f"The file is too large ({human_size(size)}); the limit is {human_size(limit)}."


def _sniff_document(data: bytes) -> str | None:
    """Name common non-image files that get renamed to .jpg, or None."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "an SVG drawing"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:256]:
        return "an HTML page"
    if head.startswith(b"<?xml"):
        return "an XML document"
    if head.startswith(b"pk\x03\x04"):
        return "a ZIP archive"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "a text file"


def _magic_format(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def _not_an_image(data: bytes) -> ImageRejected:
    claimed = _magic_format(data)
    if claimed:
        return ImageRejected(f"The file looks like a {claimed} image but is corrupt and cannot be read.")
    kind = _sniff_document(data)
    if kind:
        return ImageRejected(f"The file is {kind}, not an image. Accepted formats: {ACCEPTED_FORMATS_TEXT}.")
    return ImageRejected(f"The file is not a recognised image. Accepted formats: {ACCEPTED_FORMATS_TEXT}.")


BOMB_MESSAGE = (
    "The image declares an enormous number of pixels (a likely decompression bomb) "
    "and was refused without decoding."
)
CORRUPT_MESSAGE = "The image is truncated or corrupt and cannot be decoded."

# What Pillow's decoders raise on damaged data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, zlib.error)


def _open(data: bytes) -> Image.Image:
    """Open by content: accepted formats first, then any format only to name it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(BOMB_MESSAGE) from None
        except UnidentifiedImageError:
            pass
        except _DECODE_ERRORS:
            raise ImageRejected(CORRUPT_MESSAGE) from None
        try:
            other = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(BOMB_MESSAGE) from None
        except (UnidentifiedImageError, *_DECODE_ERRORS):
            raise _not_an_image(data) from None
    fmt = other.format or "unknown"
    other.close()
    raise ImageRejected(f"Unsupported image format {fmt}. Accepted formats: {ACCEPTED_FORMATS_TEXT}.")


def inspect_and_convert(data: bytes, *, max_pixels: int, min_side: int = MIN_SIDE_PX) -> ConvertedImage:
    """Validate image bytes and return their 8-bit grey PNG rendering.

    Check everything that can be read from the header (format, frame count, size,
    mode) before decoding, then force a full decode so truncated files fail here
    and not later in the pipeline. Raise ``ImageRejected`` with a reason for people.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - a global someone flipped
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    img = _open(data)
    fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
    if fmt not in ACCEPTED_FORMATS:
        raise ImageRejected(f"Unsupported image format {fmt}. Accepted formats: {ACCEPTED_FORMATS_TEXT}.")
    frames = getattr(img, "n_frames", 1) or 1
    if frames > 1:
        raise ImageRejected(
            f"The file holds {frames} images (frames); upload each B-scan as a separate file."
        )
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageRejected(CORRUPT_MESSAGE)
    if width < min_side or height < min_side:
        raise ImageRejected(
            f"The image is too small to be a B-scan ({width} × {height} px); the minimum is "
            f"{min_side} × {min_side} px."
        )
    if width * height > max_pixels:
        raise ImageRejected(
            f"The image has too many pixels ({width:,} × {height:,} = {width * height:,}); "
            f"the limit is {max_pixels:,}."
        )
    mode = img.mode
    if mode not in ACCEPTED_MODES:
        raise ImageRejected(
            f"Unsupported colour mode {mode}. OCT B-scans are greyscale: accepted are grey (8, 16 or 32-bit), "
            "palette, RGB and RGBA images."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(BOMB_MESSAGE) from None
        except _DECODE_ERRORS:
            raise ImageRejected(CORRUPT_MESSAGE) from None
    try:
        grey = to_grey8(ImageOps.exif_transpose(img))
    except _DECODE_ERRORS:
        raise ImageRejected(CORRUPT_MESSAGE) from None
    return ConvertedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        mode=mode,
        width=grey.width,
        height=grey.height,
        size=len(data),
        # From the pixels alone: ``info`` (EXIF, ICC profile, text) stays behind.
        png=grey_png(np.asarray(grey)),
        saturation=colour_saturation(img),
    )


_PNG_FILTER_UP = 2


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC (of type and body)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def grey_png(pixels: np.ndarray) -> bytes:
    """Encode 8-bit grey pixels (a 2-D uint8 array) as a PNG without metadata.

    The grey copy the model and the viewer read is written for every B-scan, so it is
    written fast: Pillow's encoder tries every PNG filter on every row, which buys
    nothing on speckled B-scans; here each row is filtered "up" (minus the row above,
    modulo 256) and deflated with zlib's run-length strategy. On real B-scans (512 to
    1536 px wide) that is ~3x faster to encode than Pillow at level 1 and faster to
    decode, for files within 5% of its size (smaller at 512 px, larger at 1024).
    Lossless: any PNG decoder gives the same pixels back.
    """
    a = np.asarray(pixels)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"grey_png takes a 2-D uint8 array, not {a.dtype} {a.shape}")
    height, width = a.shape
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = _PNG_FILTER_UP
    rows[0, 1:] = a[0]  # the first row's "row above" is zeros
    np.subtract(a[1:], a[:-1], out=rows[1:, 1:])  # uint8: wraps modulo 256, as PNG's filter does
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(rows.data) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")

def slice_convert(data: bytes, *, max_pixels: int) -> ConvertedImage:
    """Return the record of one B-scan of a volume, from the PNG its reader encoded.

    A volume reader (``intake``) hands over each decoded frame as a PNG it wrote itself
    from the pixels alone. An 8-bit grey one without metadata already is the grey copy
    the pipeline uses, so it is kept as it is: decoding it again and encoding the same
    pixels a second time was the largest cost of registering a volume. Any other PNG
    (16-bit, colour, carrying metadata) is checked and converted as an upload is.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        img = None
    if img is None or img.mode != "L" or img.info or getattr(img, "n_frames", 1) != 1:
        return inspect_and_convert(data, max_pixels=max_pixels, min_side=1)
    width, height = img.size
    if width < 1 or height < 1 or width * height > max_pixels:
        return inspect_and_convert(data, max_pixels=max_pixels, min_side=1)  # refuses, with the reason
    return ConvertedImage(
        sha256=hashlib.sha256(data).hexdigest(), format="PNG", mode="L", width=width, height=height,
        size=len(data), png=data, saturation=0.0,
    )


def to_grey8(img: Image.Image) -> Image.Image:
    """Return an 8-bit grey (mode ``L``) rendering of a decoded image."""
    mode = img.mode
    if mode == "L":
        return img.copy()
    if mode == "1":
        return img.convert("L")
    if mode in HIGH_DEPTH_MODES:
        return Image.fromarray(window_to_uint8(np.asarray(img)))
    if mode in ALPHA_OR_PALETTE_MODES:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    if mode in COLOUR_MODES:
        return img.convert("RGB").convert("L")
    raise ImageRejected(f"Unsupported colour mode {mode}.")


def window_to_uint8(arr: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """Map high-depth intensities to 0..255 between two percentiles of the finite values.

    A constant image maps to black; non-finite values (NaN, inf in float images) map
    to black too.
    """
    values = arr.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        raise ImageRejected("The image holds no finite pixel values.")
    lo, hi = np.percentile(values[finite], percentiles)
    if hi <= lo:
        # Few distinct values (e.g. a mostly empty frame): fall back to the full range.
        lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
