"""Helpers shared by the inference tests: the real shipped model (or a clear skip),
a small fake ``Model`` for orchestration tests only, and stored predictions."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cases.diagnoses import Diagnosis, urgency_for
from inference import quality as Q
from inference import services
from inference.models import ModelVersion, Prediction
from inference.runtime import UnreadableImage

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "inference" / "weights"
CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def real_model_or_skip():
    """The shipped model through the real runtime (as the services load it); skip with
    the reason when the model file is not in the checkout."""
    if not any(WEIGHTS_DIR.glob("*.onnx")) and not os.environ.get("OCT_MODEL_PATH"):
        pytest.skip(f"the shipped model is not in {WEIGHTS_DIR} (inference/weights/*.onnx)")
    return services.get_model()


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
    quality: Q.Quality | None = None


def fake_quality(flagged: bool) -> Q.Quality:
    comps = {k: 0.0 for k in Q.COMPONENTS} | ({"noise": 1.0} if flagged else {})
    return Q.Quality(score=0.95 if flagged else 0.1, flagged=flagged, raw=dict(comps), components=comps,
                     reasons=("noisy image",) if flagged else (), threshold=0.9)


class FakeModel:
    """Stands in for ``inference.runtime.Model`` in orchestration tests.

    The image width selects the behaviour: 64 -> rejected by the gate, 65 -> the
    model raises, 66 -> the runtime says unreadable, 67 -> read but flagged low
    confidence ("noisy image"); anything else reads as ``predicted`` (CNV by default).
    """

    name = "fake-octnet"
    classes = CLASSES
    card = {"metrics": {"macro_f1": 0.5}, "note": "test double"}

    def __init__(self, version: str = "0.0-test", predicted: str = "CNV") -> None:
        self.version = version
        self.sha256 = (version.encode().hex() * 64)[:64]
        self.predicted = predicted
        self.batches: list[int] = []

    def predict_images(self, images, *, saturations=None):
        self.batches.append(len(images))
        self.saturations = list(saturations or [None] * len(images))
        out = []
        for img in images:
            if img.width == 65:
                raise RuntimeError("model exploded")
            if img.width == 66:
                raise UnreadableImage("cannot decode")
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
                    quality=fake_quality(img.width == 67),
                )
            )
        return out


@pytest.fixture
def fake_model(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr("inference.services.run.get_model", lambda: model)
    return model


def make_version(name: str = "octnet", version: str = "1.0", active: bool = True) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, version=version, sha256=(name + version).encode().hex().ljust(64, "0")[:64], is_active=active
    )


def make_prediction(scan, version: ModelVersion | None = None, predicted: str = "CNV", *, gate_passed: bool = True,
                    confidence: float = 0.8, heatmap: bytes | None = None, heatmap_grid: np.ndarray | None = None,
                    low_confidence: bool = False, reasons: tuple[str, ...] = ("noisy image", "no foveal pit")) -> Prediction:
    """Store a reading directly (views and API tests need no model run).

    ``heatmap``: an overlay file stored with it, as readings made before heatmaps were
    drawn on demand have; ``heatmap_grid``: the grid a reading keeps now (levels in [0, 1]),
    its overlay not yet rendered."""
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
        quality_score=0.93 if low_confidence else 0.12,
        low_confidence=low_confidence,
        quality={"score": 0.93 if low_confidence else 0.12, "flagged": low_confidence, "threshold": 0.9,
                 "reasons": list(reasons) if low_confidence else [], "components": {}, "raw": {}},
    )
    if heatmap is not None:
        p.heatmap.save("h.png", ContentFile(heatmap), save=False)
    if heatmap_grid is not None:  # as the worker stores it
        services.overlays.prediction_heatmap_grid_set(prediction=p, heatmap=heatmap_grid)
    p.save()
    services.run.scan_reading_copy(scan_id=scan.pk)  # as the services do when they store a reading
    return p


def png_bytes(width: int = 32, height: int = 24, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()
