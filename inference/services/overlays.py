"""Heatmap overlays rendered on demand: a reading keeps its heatmap grid, the overlay PNG
is drawn from it when first asked for and kept in storage for the requests after."""
from __future__ import annotations

import logging

import numpy as np
from django.core.files.base import ContentFile

from cases.models import Scan

from ..heatmap import heatmap_grid_png
from ..models import Prediction
from ..selectors import heatmap_overlay

logger = logging.getLogger(__name__)


def prediction_heatmap_grid_set(*, prediction: Prediction, heatmap: np.ndarray) -> None:
    """Give an unsaved reading its heatmap as a reading keeps it: the grid's levels
    (``heatmap_grid_png``) and the name its overlay will be stored under when first asked
    for (``prediction_heatmap_png``). Sets nothing when the grid cannot be encoded (raises)."""
    prediction.heatmap_grid = heatmap_grid_png(heatmap)
    prediction.heatmap.name = Prediction._meta.get_field("heatmap").generate_filename(prediction, "heatmap.png")


def prediction_heatmap_png(*, prediction: Prediction, scan: Scan | None = None) -> bytes | None:
    """Return the overlay PNG of a reading's heatmap, or None when it has none.

    The first request renders it from the reading's grid (``inference.selectors.heatmap_overlay``)
    and stores it under the name the reading gave it; later ones read that file. Two first
    requests at once render the same bytes: the second copy is dropped. A re-run that
    discards the reading while its first view renders it can leave that file behind,
    unreferenced: the re-run deletes the reading's file when it commits, before this stores
    it. The caller applies the blinding rule first.
    """
    overlay = heatmap_overlay(prediction=prediction, scan=scan)
    if overlay is None:
        return None
    if not overlay.stored:
        name = prediction.heatmap.name
        storage = prediction.heatmap.storage
        try:
            saved = storage.save(name, ContentFile(overlay.png), max_length=prediction.heatmap.field.max_length)
            if saved != name:  # another request stored it first
                storage.delete(saved)
        except OSError:  # served all the same; the next request renders it again
            logger.exception("could not store the heatmap overlay of prediction %s", prediction.pk)
    return overlay.png
