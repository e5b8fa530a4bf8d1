"""Helpers shared by the inference tests: the real shipped model (or a clear skip),
a small fake ``Model`` for orchestration tests only, and stored predictions."""
from __future__ import annotations

import importlib
import io
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cases.diagnoses import Diagnosis, urgency_for
from inference.models import ModelVersion, Prediction

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "inference" / "weights"
CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def real_model_or_skip():
    """The shipped model through the real runtime; skip (with the reason) only while
    the ML engineer's model or runtime is not in the checkout yet."""
    if not any(WEIGHTS_DIR.glob("*.onnx")) and not os.environ.get("OCT_MODEL_PATH"):
        pytest.skip(f"the shipped model is not in {WEIGHTS_DIR} yet (inference/weights/*.onnx)")
    try:
        runtime = importlib.import_module("inference.runtime")
    except ImportError as exc:
        pytest.skip(f"inference.runtime is not importable yet: {exc}")
    return runtime.get_model()


def _png(image: Image.Image, heatmap: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class _UnreadableImage(ValueError):
    pass


def ensure_runtime_importable(monkeypatch) -> None:
    """Let orchestration tests run before inference/runtime.py lands: install a stub
    module with the runtime's exception and overlay function, only if it is absent."""
    try:
        importlib.import_module("inference.runtime")
    except ImportError:
        stub = types.ModuleType("inference.runtime")
        stub.UnreadableImage = _UnreadableImage
        stub.heatmap_overlay_png = _png
        stub.get_model = lambda: (_ for _ in ()).throw(RuntimeError("stub runtime has no model"))
        monkeypatch.setitem(sys.modules, "inference.runtime", stub)


@dataclass(frozen=True)
class FakeReading:
    probabilities: dict
    predicted: str
    confidence: float
    oct_score: float
    gate_passed: bool
    gate_reason: str
    heatmap: np.ndarray
    inference_ms: float


class FakeModel:
    """Stands in for ``inference.runtime.Model`` in orchestration tests.

    The image width selects the behaviour: 64 -> rejected by the gate, 65 -> the
    model raises, 66 -> the runtime says unreadable; anything else reads as
    ``predicted`` (CNV by default).
    """

    name = "fake-octnet"
    classes = CLASSES
    card = {"metrics": {"macro_f1": 0.5}, "note": "test double"}

    def __init__(self, version: str = "0.0-test", predicted: str = "CNV") -> None:
        self.version = version
        self.sha256 = (version.encode().hex() * 64)[:64]
        self.predicted = predicted
        self.batches: list[int] = []

    def predict_images(self, images):
        runtime = importlib.import_module("inference.runtime")
        self.batches.append(len(images))
        out = []
        for img in images:
            if img.width == 65:
                raise RuntimeError("model exploded")
            if img.width == 66:
                raise runtime.UnreadableImage("cannot decode")
            passed = img.width != 64
            probs = {c: (0.7 if c == self.predicted else 0.1) for c in CLASSES}
            out.append(
                FakeReading(
                    probabilities=probs,
                    predicted=self.predicted,
                    confidence=0.7,
                    oct_score=0.95 if passed else 0.02,
                    gate_passed=passed,
                    gate_reason="" if passed else "the image is mostly colour, unlike a B-scan",
                    heatmap=np.zeros((img.height, img.width), dtype=np.float32),
                    inference_ms=1.5,
                )
            )
        return out


@pytest.fixture
def fake_model(monkeypatch):
    ensure_runtime_importable(monkeypatch)
    model = FakeModel()
    monkeypatch.setattr("inference.services.get_model", lambda: model)
    return model


def make_version(name: str = "octnet", version: str = "1.0", active: bool = True) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, version=version, sha256=(name + version).encode().hex().ljust(64, "0")[:64], is_active=active
    )


def make_prediction(scan, version: ModelVersion | None = None, predicted: str = "CNV", *, gate_passed: bool = True,
                    confidence: float = 0.8, heatmap: bytes | None = None) -> Prediction:
    """Store a reading directly (views and API tests need no model run)."""
    from django.core.files.base import ContentFile

    version = version or ModelVersion.objects.filter(is_active=True).first() or make_version()
    probs = {c: (confidence if c == predicted else (1 - confidence) / 3) for c in CLASSES}
    p = Prediction(
        scan=scan,
        model_version=version,
        p_cnv=probs["CNV"],
        p_dme=probs["DME"],
        p_drusen=probs["DRUSEN"],
        p_normal=probs["NORMAL"],
        predicted=predicted if gate_passed else "",
        confidence=confidence,
        urgency=urgency_for(Diagnosis(predicted)) if gate_passed else "",
        oct_score=0.9 if gate_passed else 0.1,
        gate_passed=gate_passed,
        inference_ms=7.0,
    )
    if heatmap is not None:
        p.heatmap.save("h.png", ContentFile(heatmap), save=False)
    p.save()
    return p


def png_bytes(width: int = 32, height: int = 24, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()
