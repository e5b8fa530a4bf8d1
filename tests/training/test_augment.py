"""Training augmentation recipes (numpy + Pillow only: runs in the app environment too)."""
from __future__ import annotations

import numpy as np
import pytest

from inference import preprocessing as P
from training import augment as A
from training import data as D


def _scan(h: int = 240, w: int = 400) -> np.ndarray:
    rng = np.random.default_rng(5)
    g = np.full((h, w), 20, np.float32)
    g[90:150] = 140
    g[140:148] = 230
    return np.clip(g + rng.normal(0, 8, g.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("recipe", A.RECIPES)
@pytest.mark.parametrize("label", [-1, *range(len(D.CLASSES))])
def test_every_recipe_gives_a_normalised_view_of_the_input_size_deterministically(recipe, label):
    cfg = P.preprocessing_config()
    grey = _scan()
    band = P.find_band(grey)
    a = A.augmented_input(grey, band, np.random.default_rng(1), cfg, recipe=recipe, label=label)
    b = A.augmented_input(grey, band, np.random.default_rng(1), cfg, recipe=recipe, label=label)
    size = int(cfg["input_size"])
    assert a.dtype == np.float32 and a.shape[-2:] == (size, size)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)


def test_unknown_recipe_is_refused():
    grey = _scan()
    with pytest.raises(ValueError):
        A.augmented_input(grey, P.find_band(grey), np.random.default_rng(0), P.preprocessing_config(), recipe="nope")


def test_robust_recipe_off_fovea_cuts_keep_away_from_the_centre():
    assert D.CLASSES[A.NORMAL_LABEL] == "NORMAL"
    rng = np.random.default_rng(0)
    for _ in range(2000):
        x0, x1 = A._off_fovea_extent(rng)
        width, centre = x1 - x0, (x0 + x1) / 2
        assert 0.25 <= width <= 0.55
        assert 0.0 <= x0 < x1 <= 1.0
        assert abs(centre - 0.5) >= 0.2 - 1e-9


@pytest.mark.parametrize("recipe", A.RECIPES)
def test_a_full_height_window_frames_the_whole_height_whatever_the_band(recipe):
    # training.train --window full: the crop's height no longer follows the band's thickness.
    cfg = {**P.preprocessing_config(), "window_min_frac": 1.0, "window_max_frac": 1.0}
    grey = _scan()
    band = P.find_band(grey)
    box = P.window(band, cfg)
    assert box[3] - box[1] == pytest.approx(grey.shape[0])
    view = A.augmented_input(grey, band, np.random.default_rng(3), cfg, recipe=recipe, label=0)
    assert view.shape[-2:] == (int(cfg["input_size"]),) * 2 and np.isfinite(view).all()
