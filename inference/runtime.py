"""ONNX serving runtime for the OCT classifier (onnxruntime + numpy + Pillow only).

One ``onnxruntime.InferenceSession`` per process, created lazily by :func:`get_model`
with explicit thread counts. Preprocessing is :mod:`inference.preprocessing`, the
same code the model was trained with; its constants, the class order, the
temperature (baked into the graph), the gate threshold and the quality flag's
constants (section ``quality``, see :mod:`inference.quality`) come from
``inference/weights/model.json``. Every reading carries its quality assessment.

Django-free: ``inference.services`` passes the settings (``OCT_MODEL_PATH``,
``OCT_ORT_INTRA_OP_THREADS`` / ``OCT_ORT_INTER_OP_THREADS``: onnxruntime thread counts
of the session, 1 / 1 by default since Celery runs one worker process per core;
``OCT_BATCH_THREADS``: threads a batch of scans is spread over. Each thread
preprocesses its share of the batch and runs it through the shared, thread-safe
session; with 1 intra-op thread per run this keeps every core busy, which intra-op
parallelism alone does not, as preprocessing is per image).
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, UnidentifiedImageError

from inference import preprocessing as P
from inference import quality as Q
from inference.card import model_file

__all__ = [
    "Model",
    "Reading",
    "UnreadableImage",
    "get_model",
    "load_model",
]


class UnreadableImage(ValueError):
    """The uploaded bytes are not an image Pillow can decode."""


@dataclass(frozen=True)
class Reading:
    """The model's reading of one image."""

    probabilities: dict[str, float]  # class -> calibrated probability, model.json class order
    predicted: str  # argmax class
    confidence: float  # max probability
    oct_score: float  # gate head: probability that the input is a retinal OCT B-scan
    gate_passed: bool  # False -> "not an OCT B-scan"
    gate_reason: str  # "" when passed, a human sentence otherwise
    # float32 in [0, 1] on the original image, sampled every preprocessing.HEATMAP_STEP
    # pixels: shape (ceil(H / step), ceil(W / step)). A reading keeps its levels
    # (heatmap.heatmap_grid_png); heatmap.heatmap_overlay_from_grid scales them up to the image.
    heatmap: np.ndarray
    inference_ms: float
    # When not to trust it (inference.quality): score, flag, components, reasons.
    quality: Q.Quality | None = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Model:
    """A loaded ONNX model plus its model.json (the card)."""

    def __init__(
        self,
        onnx_path: Path,
        card: dict[str, Any],
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        batch_threads: int = 1,
    ) -> None:
        self.path = Path(onnx_path)
        self.card: dict[str, Any] = card
        self.name: str = str(card.get("name", self.path.stem))
        self.version: str = str(card.get("version", "0"))
        self.classes: tuple[str, ...] = tuple(card.get("classes") or ("CNV", "DME", "DRUSEN", "NORMAL"))
        self.sha256: str = _sha256(self.path)
        self.gate_threshold: float = float(card.get("gate_threshold", 0.5))
        self._cfg = P.preprocessing_config(card)
        # (graph input, its heatmap output, its preprocessing) per framing of the scan: one for
        # a single model or an ensemble of members that share the window; one per member for
        # an ensemble whose members frame scans differently (model.json "member_inputs",
        # written by training.ensemble).
        self._inputs: list[tuple[str, str, dict[str, Any]]] = [
            (str(m["input"]), str(m["heatmap"]), P.preprocessing_config({"preprocessing": m["preprocessing"]}))
            for m in card.get("member_inputs") or []
        ] or [("input", "heatmap", self._cfg)]
        self.quality_cfg: dict[str, Any] = Q.quality_config(card)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = int(inter_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.batch_threads = max(1, int(batch_threads))
        self._pool = ThreadPoolExecutor(max_workers=self.batch_threads) if self.batch_threads > 1 else None

    @property
    def input_size(self) -> int:
        return int(self._cfg["input_size"])

    def preprocess(self, image: Image.Image, *, saturation: float | None = None) -> list[P.Preprocessed]:
        """The image as each graph input wants it (one entry unless members frame scans differently)."""
        return P.preprocess_many(image, [cfg for _, _, cfg in self._inputs], saturation=saturation)

    def run_arrays(self, batch: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the graph on preprocessed inputs [N, 1, S, S], a list of one per graph input (see
        :meth:`preprocess`; one array is fed to every input, for timing): (probabilities, the
        first input's heatmap, oct_score)."""
        probs, heats, score = self._run(batch if isinstance(batch, list) else [batch] * len(self._inputs))
        return probs, heats[0], score

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs, in the order :meth:`preprocess` returns the crops."""
        return [name for name, _, _ in self._inputs]

    def _run(self, batches: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        if len(batches) != len(self._inputs):
            raise ValueError(f"the graph takes {len(self._inputs)} inputs, not {len(batches)}")
        feeds = {name: np.ascontiguousarray(b, dtype=np.float32) for (name, _, _), b in zip(self._inputs, batches)}
        out = self._session.run(["probabilities", "oct_score", *(h for _, h, _ in self._inputs)], feeds)
        return out[0], out[2:], out[1]

    def _predict_chunk(
        self, items: list[tuple[Image.Image, float | None]]
    ) -> list[tuple[P.Preprocessed, np.ndarray, float, np.ndarray, Q.Quality]]:
        """Preprocess, run, map back the heatmaps and assess the quality of some images (one session run)."""
        pre = [self.preprocess(img, saturation=sat) for img, sat in items]
        probs, heats, score = self._run([np.stack([p[k].array for p in pre]) for k in range(len(self._inputs))])
        out = []
        for i, p in enumerate(pre):
            # Each input's map onto the original image, then their mean: members that frame the
            # scan differently point at the same place of the image.
            grid = np.mean([P.heatmap_to_grid(h[i], q.geometry) for h, q in zip(heats, p)], axis=0).astype(np.float32)
            out.append((p[0], probs[i], float(score[i]), grid, self._assess(p[0], probs[i], float(score[i]))))
        return out

    def _assess(self, pre: P.Preprocessed, probs: np.ndarray, oct_score: float) -> Q.Quality:
        # The model input back in [0, 1]: the flattened, stretched crop the model saw.
        x = pre.array[0] * float(self._cfg["std"]) + float(self._cfg["mean"])
        return Q.assess(
            x,
            band_contrast=pre.band.contrast,
            probabilities=probs,
            oct_score=oct_score,
            classes=self.classes,
            cfg=self.quality_cfg,
        )

    def predict_images(
        self, images: list[Image.Image], *, saturations: list[float | None] | None = None
    ) -> list[Reading]:
        """Classify a batch of images: one session run per batch thread's share.

        ``saturations``: per image, the colour saturation of the file as uploaded when
        the image is its grey rendering (stored scans); None measures the image itself.
        """
        if not images:
            return []
        items = list(zip(images, saturations or [None] * len(images), strict=True))
        t0 = time.perf_counter()
        if self._pool is None or len(items) < 2:
            results = self._predict_chunk(items)
        else:
            # Contiguous shares keep the results in input order.
            size = -(-len(items) // self.batch_threads)
            shares = [items[i : i + size] for i in range(0, len(items), size)]
            results = [r for chunk in self._pool.map(self._predict_chunk, shares) for r in chunk]
        per_image_ms = (time.perf_counter() - t0) * 1000.0 / len(images)
        readings = []
        for p, row, s, grid, quality in results:
            pr = row.astype(np.float64)
            k = int(pr.argmax())
            reason = p.precheck_reason
            if not reason and s < self.gate_threshold:
                reason = f"The image does not look like a retinal OCT B-scan (OCT score {s:.2f})."
            readings.append(
                Reading(
                    probabilities={c: float(pr[j]) for j, c in enumerate(self.classes)},
                    predicted=self.classes[k],
                    confidence=float(pr[k]),
                    oct_score=s,
                    gate_passed=not reason,
                    gate_reason=reason,
                    heatmap=grid,
                    inference_ms=per_image_ms,
                    quality=quality,
                )
            )
        return readings


def decode_image(data: bytes) -> Image.Image:
    """Decode bytes with Pillow, raising :class:`UnreadableImage` on failure."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"The file is not a readable image ({exc}).") from exc
    return img


def load_model(
    path: str | Path | None = None, *, intra_op_threads: int = 1, inter_op_threads: int = 1, batch_threads: int = 1
) -> Model:
    """Build a fresh :class:`Model`; ``path`` is the .onnx file (default: the card's)."""
    path, card = model_file(path)
    return Model(
        path, card, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, batch_threads=batch_threads
    )


_model: Model | None = None
_lock = threading.Lock()


def get_model(
    path: str | Path | None = None, *, intra_op_threads: int = 1, inter_op_threads: int = 1, batch_threads: int = 1
) -> Model:
    """Return the process-wide model, creating the session on first use (thread-safe).

    The arguments apply to the first call only; the caller (``inference.services``)
    passes the settings.
    """
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = load_model(
                    path,
                    intra_op_threads=intra_op_threads,
                    inter_op_threads=inter_op_threads,
                    batch_threads=batch_threads,
                )
    return _model
