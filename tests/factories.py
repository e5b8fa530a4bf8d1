"""factory_boy factories for records. Images are generated, never real OCT data."""
from __future__ import annotations

import hashlib
import io
import itertools
from datetime import date

import factory
import numpy as np
from django.core.files.base import ContentFile
from PIL import Image

from cases.images import PNG_SIGNATURE, png_chunk
from cases.models import Case, Patient, Scan, Volume
from verification.services import review_open

_counter = itertools.count(1)


def synthetic_bscan_png(width: int = 512, height: int = 496, seed: int | None = None) -> bytes:
    """A grey image with a bright horizontal band, shaped like an OCT B-scan (not real data)."""
    rng = np.random.default_rng(seed if seed is not None else next(_counter))
    rows = np.arange(height)[:, None]
    centre = height * 0.45 + 10 * np.sin(np.arange(width)[None, :] / 60.0)
    band = 180 * np.exp(-(((rows - centre) / (height * 0.06)) ** 2))
    noise = rng.normal(0, 18, size=(height, width))
    arr = np.clip(20 + band + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # uint8 2-D arrays are mode L
    return buf.getvalue()


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    identifier = factory.Sequence(lambda n: f"P-{n:06d}")
    sex = Patient.Sex.FEMALE
    birth_year = 1956


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    patient = factory.SubFactory(PatientFactory)
    eye = Case.Eye.OD
    exam_date = factory.LazyFunction(lambda: date(2026, 11, 2))
    device = "Heidelberg Spectralis"


class ScanFactory(factory.django.DjangoModelFactory):
    """A stored scan row with real (generated) image files and its review opened, as
    ``intake.services.scan_submit`` leaves it, but with no analysis enqueued — use
    ``scan_submit`` for that."""

    class Meta:
        model = Scan

    case = factory.SubFactory(CaseFactory)
    original_name = factory.Sequence(lambda n: f"bscan-{n}.png")
    format = "PNG"
    original_mode = "L"
    width = 512
    height = 496
    status = Scan.Status.RECEIVED

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        data = kwargs.pop("data", None) or synthetic_bscan_png(kwargs.get("width", 512), kwargs.get("height", 496))
        scan = model_class(*args, **kwargs)
        scan.sha256 = hashlib.sha256(data).hexdigest()
        scan.file_size = len(data)
        scan.original.save(scan.original_name, ContentFile(data), save=False)
        scan.image.save("image.png", ContentFile(data), save=False)
        scan.save()
        review_open(scan=scan)
        return scan


class VolumeFactory(factory.django.DjangoModelFactory):
    """A volume of ``slice_count`` stored B-scans (``ScanFactory`` rows, slices 0..n-1), its
    review opened as ``intake.volumes.volume_submit`` leaves it (one per volume of more
    than one B-scan), no analysis enqueued."""

    class Meta:
        model = Volume
        skip_postgeneration_save = True

    case = factory.SubFactory(CaseFactory)
    source_format = Volume.SourceFormat.DICOM
    laterality = Case.Eye.OD
    slice_count = 5
    sha256 = factory.Sequence(lambda n: hashlib.sha256(f"volume-{n}".encode()).hexdigest())
    original_name = factory.Sequence(lambda n: f"volume-{n}.dcm")

    @factory.post_generation
    def slices(volume, create, extracted, **kwargs):
        for index in range(volume.slice_count):
            ScanFactory(case=volume.case, volume=volume, slice_index=index, data=synthetic_bscan_png(96, 80, seed=index),
                        width=96, height=80)


# --- image builders for upload tests (generated, never real data) -------------------------


def encode_image(img: Image.Image, fmt: str, **params) -> bytes:
    """Encode a Pillow image to bytes in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def bscan_image(width: int = 160, height: int = 128, seed: int | None = None) -> Image.Image:
    """A small decoded synthetic B-scan (mode L)."""
    img = Image.open(io.BytesIO(synthetic_bscan_png(width, height, seed=seed)))
    img.load()
    return img


def bscan_bytes(fmt: str = "PNG", width: int = 160, height: int = 128, seed: int | None = None, mode: str = "L") -> bytes:
    """A synthetic B-scan encoded as ``fmt`` in ``mode`` (L, RGB, P, CMYK...)."""
    img = bscan_image(width, height, seed=seed)
    if mode != "L":
        img = img.convert(mode)
    return encode_image(img, fmt)


def bscan16_tiff(width: int = 160, height: int = 128, *, max_value: int = 4095, hot_pixel: bool = True,
                 big_endian: bool = False) -> tuple[bytes, np.ndarray]:
    """A 16-bit grey TIFF like a 12-bit OCT export, with one saturated specular pixel.

    Returns the bytes and the uint16 array that was encoded.
    """
    rows = np.arange(height)[:, None].astype(np.float64)
    band = np.exp(-(((rows - height * 0.45) / (height * 0.08)) ** 2))
    ramp = np.linspace(0.1, 1.0, width)[None, :]
    arr = np.round(max_value * 0.05 + max_value * 0.9 * band * ramp).astype(np.uint16)
    if hot_pixel:
        arr[0, 0] = 65535
    if big_endian:
        img = Image.frombytes("I;16B", (width, height), arr.astype(">u2").tobytes())
    else:
        img = Image.frombytes("I;16", (width, height), arr.astype("<u2").tobytes())
    return encode_image(img, "TIFF"), arr


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""
    import struct
    import zlib

    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + png_chunk(b"IEND", b"")
    )


def review_update(*, scans, **fields):
    """Set review fields of ``scans`` (a scan or a list) directly, as a test shortcut past the
    grading services, and keep the scans' copies of their review as the services do."""
    from verification.models import Review
    from verification.services import review_copy

    reviews = Review.objects.filter(scan__in=scans if isinstance(scans, (list, tuple)) else [scans])
    reviews.update(**fields)
    for review in reviews:
        review_copy(review)
