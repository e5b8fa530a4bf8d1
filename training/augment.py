"""Training-time augmentation built on the serving preprocessing functions.

Every random view goes through ``inference.preprocessing`` (flatten, band window,
contrast stretch, normalise) with jittered parameters, so training sees exactly the
serving pipeline plus the variation other clinics and devices bring: framing
(window scale/position, horizontal extent = off-centre cuts and other fields of
view, i.e. aspect), imperfect flattening, blur, speckle, contrast/gamma, flips.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from inference import preprocessing as P


def augmented_input(
    grey: np.ndarray, band: P.Band, rng: np.random.Generator, cfg: dict[str, Any], strength: float = 1.0
) -> np.ndarray:
    """Return one random normalised view [1, S, S] of a cached grey scan."""
    size = int(cfg["input_size"])
    # Partial flattening: other devices' curvature is not always removed perfectly.
    shift_gain = rng.uniform(0.6, 1.15) if rng.random() < 0.5 * strength else 1.0
    flat = P.flatten(grey, np.round(band.shifts * shift_gain).astype(np.int32))
    width = rng.uniform(0.45, 1.0) if rng.random() < 0.6 * strength else 1.0
    x0 = rng.uniform(0.0, 1.0 - width)
    box = P.window(
        band,
        cfg,
        scale=float(np.exp(rng.uniform(-0.3, 0.3) * strength)),
        dy=float(rng.uniform(-0.15, 0.15) * strength),
        x0=x0,
        x1=x0 + width,
    )
    img = Image.fromarray(flat).crop(tuple(int(round(v)) for v in box))
    if rng.random() < 0.3 * strength:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 2.0))))
    arr = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)
    if rng.random() < 0.4 * strength:
        # Speckle: multiplicative noise, as OCT's coherent noise is.
        arr = arr * rng.gamma(shape=8.0, scale=1 / 8.0, size=arr.shape).astype(np.float32)
    arr = P.stretch_contrast(arr, cfg)
    if rng.random() < 0.7 * strength:
        arr = np.clip(arr, 0, 1) ** float(np.exp(rng.uniform(-0.35, 0.35)))
        arr = np.clip((arr - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.08, 0.08), 0, 1)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return P.normalise(np.ascontiguousarray(arr, dtype=np.float32), cfg)
