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

from cases.models import Case, Patient, Scan

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
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
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
    """A stored scan row with real (generated) image files; bypasses the upload
    service, so no analysis is enqueued — use ``cases.services.scan_register`` for that."""

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
        return scan
