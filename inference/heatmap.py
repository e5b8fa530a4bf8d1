"""Rendering of the model's heatmap as a transparent overlay PNG (numpy + Pillow only).

The runtime gives the class-activation map on a coarse grid over the original image
(:func:`inference.preprocessing.heatmap_to_grid`); this module turns it into the PNG
the viewer draws over the B-scan. A reading keeps only the grid's 256 levels, as a
small grey PNG (:func:`heatmap_grid_png`, a few KB); the overlay is rendered from it
when it is first asked for (:func:`heatmap_overlay_from_grid`), pixel for pixel the
overlay :func:`heatmap_overlay_png` renders from the model's grid, since that quantises
to the same levels first.
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


def heatmap_levels(heatmap: np.ndarray) -> np.ndarray:
    """The heatmap's values in [0, 1] quantised to levels 0..255 (uint8), as the overlay draws them."""
    # 256 levels are more than the eye tells apart in an overlay.
    return (np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def heatmap_grid_png(heatmap: np.ndarray) -> bytes:
    """Return the heatmap's levels as an 8-bit grey PNG: what a reading keeps to render its overlay later."""
    buf = io.BytesIO()
    # A CAM is smooth: level 3 gives ~3 KB for a 512-px B-scan in half a millisecond.
    Image.fromarray(heatmap_levels(heatmap)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def heatmap_overlay_png(image: Image.Image, heatmap: np.ndarray) -> bytes:
    """Return a PNG with alpha, the size of ``image``: the coloured heatmap, transparent where cold.

    ``heatmap`` is in [0, 1] at any resolution over the image (the runtime gives a
    grid every few pixels); it is interpolated to the image size here. The layer is
    meant to be drawn over the original image (CSS or Pillow ``alpha_composite``);
    cold regions (below 0.2) are fully transparent.
    """
    return _overlay_png(heatmap_levels(heatmap), image.size)


def heatmap_overlay_from_grid(grid_png: bytes, size: tuple[int, int]) -> bytes:
    """Return the overlay PNG of ``size`` (width, height) from a grid stored by :func:`heatmap_grid_png`."""
    with Image.open(io.BytesIO(grid_png), formats=["PNG"]) as grid:
        if grid.mode != "L":
            raise ValueError(f"a heatmap grid is an 8-bit grey PNG, not mode {grid.mode}")
        levels = np.asarray(grid)
    return _overlay_png(levels, size)


def _overlay_png(levels: np.ndarray, size: tuple[int, int]) -> bytes:
    w, h = size
    layer = Image.fromarray(levels)
    # Interpolating the quantised levels: a uint8 resize is several times cheaper than float.
    if layer.size != (w, h):
        layer = layer.resize((w, h), Image.BILINEAR)
    # Stored as a palette PNG whose palette and transparency are the colour table, it
    # decodes to the same RGBA pixels at a fraction of the size and encoding time of RGBA.
    layer.putpalette(_OVERLAY_LUT[:, :3].ravel().tolist())
    buf = io.BytesIO()
    # Fast zlib level: the first view of a reading waits for this encoding (and a report
    # draws it again on every render), at the cost of a larger file kept in storage.
    layer.save(buf, format="PNG", compress_level=1, transparency=bytes(_OVERLAY_LUT[:, 3]))
    return buf.getvalue()
