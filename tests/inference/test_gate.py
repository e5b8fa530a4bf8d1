"""The input gate: images that are not OCT B-scans are flagged, real scans pass.

The non-OCT images are generated here with PIL/numpy only (no scikit-image in the
app requirements), with seeds and kinds the gate head never saw in training.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from inference import card as C
from inference import preprocessing as P

ONNX = C.WEIGHTS_DIR / str(C.load_model_json().get("onnx", "oct-lite0-v1.onnx"))
pytestmark = pytest.mark.skipif(not ONNX.is_file(), reason=f"shipped model {ONNX} is missing (run python -m training.train)")


def colour_photo(rng):
    a = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    return Image.fromarray(a).resize((480, 360), Image.BICUBIC).filter(ImageFilter.GaussianBlur(3))


def fundus(rng):
    s = 420
    yy, xx = np.mgrid[0:s, 0:s]
    d = np.hypot(xx - s / 2, yy - s / 2)
    img = np.zeros((s, s, 3), np.float32)
    img[d < s * 0.45] = [200, 90, 30]
    pil = Image.fromarray(img.astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for k in range(8):
        ang = 2 * math.pi * k / 8 + rng.uniform(0, 0.5)
        draw.line([(s * 0.6, s * 0.5), (s * 0.6 + 150 * math.cos(ang), s * 0.5 + 150 * math.sin(ang))], fill=(110, 20, 10), width=4)
    return pil


def document(rng):
    img = Image.new("L", (600, 800), 250)
    d = ImageDraw.Draw(img)
    for y in range(30, 770, 22):
        d.text((40, y), "Referral letter: patient seen in clinic, OCT requested " + str(int(rng.integers(1e6))), fill=20)
    return img


def blank(rng):
    return Image.new("L", (500, 400), int(rng.integers(0, 256)))


def noise(rng):
    return Image.fromarray(rng.integers(0, 256, (400, 500), dtype=np.uint8))


def gradient(rng):
    x = np.linspace(0, 255, 500, dtype=np.float32)
    return Image.fromarray(np.tile(x, (400, 1)).astype(np.uint8))


KINDS = [colour_photo, fundus, document, blank, noise, gradient]


@pytest.fixture(scope="module")
def model():
    from inference import runtime

    return runtime.load_model(intra_op_threads=2)


@pytest.mark.parametrize("make", KINDS, ids=[k.__name__ for k in KINDS])
def test_non_oct_images_are_flagged_not_an_oct_bscan(model, make):
    rng = np.random.default_rng(12345)
    readings = model.predict_images([make(rng) for _ in range(3)])
    for r in readings:
        assert not r.gate_passed
        assert r.gate_reason


def test_real_oct_scans_pass_the_gate(model, oct_data):
    paths = [sorted((oct_data / sub).iterdir())[i] for sub in ("kermany/DRUSEN", "kermany/NORMAL", "octdl/DME", "octdl/NORMAL") for i in (0, 1)]
    readings = model.predict_images([Image.open(p) for p in paths])
    assert all(r.gate_passed for r in readings), [(p.name, r.oct_score, r.gate_reason) for p, r in zip(paths, readings)]
    assert all(r.gate_reason == "" for r in readings)


def test_colour_photo_uploaded_through_intake_is_refused_by_the_colour_rule(
    db, clinician, django_capture_on_commit_callbacks
):
    """The stored copy the model reads is grey: the colour rule must see the upload."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile

    from cases.models import Scan
    from inference.models import Prediction
    from intake.services import scan_submit
    from tests.factories import CaseFactory

    buf = io.BytesIO()
    colour_photo(np.random.default_rng(7)).save(buf, format="JPEG", quality=92)
    with django_capture_on_commit_callbacks(execute=True):
        scan = scan_submit(
            case=CaseFactory(), file=SimpleUploadedFile("holiday.jpg", buf.getvalue()), uploaded_by=clinician
        )
    scan.refresh_from_db()
    assert scan.colour_saturation > P.DEFAULT_PREPROCESSING["precheck_max_saturation"]
    assert scan.status == Scan.Status.FAILED
    assert "The image is in colour; OCT B-scans are greyscale." in scan.status_detail
    assert not Prediction.objects.get(scan=scan).gate_passed
