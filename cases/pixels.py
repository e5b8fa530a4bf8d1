"""Pixel measures of an uploaded image that need neither Django nor the database.

Kept apart from ``cases.images`` (which speaks the app's error types) so that
``inference.preprocessing``, which training imports without Django, can use them.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def colour_saturation(image: Image.Image) -> float:
    """Return the mean HSV saturation (0..1) of a downscaled copy; 0 for grey images.

    Measured on the file as uploaded: the input gate refuses colour photographs, and
    the grey copy that is stored and analysed no longer shows their colour.
    """
    if image.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "1"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((128, 128))
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)
    return float(hsv[..., 1].mean() / 255.0)
