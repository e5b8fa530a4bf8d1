"""Rendering of the model's heatmap as a transparent overlay PNG (numpy + Pillow only).

The runtime gives the class-activation map on a coarse grid over the original image
(:func:`inference.preprocessing.heatmap_to_grid`); this module turns it into the PNG
the viewer draws over the B-scan.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _colormap(v: np.ndarray) -> np.ndarray:
    """A jet-like colour map (blue -> cyan -> yellow -> red) without matplotlib."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def _overlay_lut() -> np.ndarray:
    """RGBA colours for heatmap levels 0..255: jet-like colour, transparent below 0.2."""
    v = np.arange(256, dtype=np.float32) / 255.0
    alpha = np.clip((v - 0.2) / 0.8, 0.0, 1.0) * 0.6
    return (np.concatenate([_colormap(v), alpha[:, None]], axis=-1) * 255).round().astype(np.uint8)


_OVERLAY_LUT = _overlay_lut()


def heatmap_overlay_png(image: Image.Image, heatmap: np.ndarray) -> bytes:
    """Return a PNG with alpha, the size of ``image``: the coloured heatmap, transparent where cold.

    ``heatmap`` is in [0, 1] at any resolution over the image (the runtime gives a
    grid every few pixels); it is interpolated to the image size here. The layer is
    meant to be drawn over the original image (CSS or Pillow ``alpha_composite``);
    cold regions (below 0.2) are fully transparent.
    """
    w, h = image.size
    hm = np.asarray(heatmap, dtype=np.float32)
    # 256 levels are more than the eye tells apart in an overlay, so quantise first
    # and interpolate the levels (a uint8 resize is several times cheaper than float).
    levels = Image.fromarray((np.clip(hm, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    if levels.size != (w, h):
        levels = levels.resize((w, h), Image.BILINEAR)
    # Stored as a palette PNG whose palette and transparency are the colour table, it
    # decodes to the same RGBA pixels at a fraction of the size and encoding time of RGBA.
    levels.putpalette(_OVERLAY_LUT[:, :3].ravel().tolist())
    buf = io.BytesIO()
    # Fast zlib level: the overlay is regenerated from the heatmap, never archived.
    levels.save(buf, format="PNG", compress_level=1, transparency=bytes(_OVERLAY_LUT[:, 3]))
    return buf.getvalue()
