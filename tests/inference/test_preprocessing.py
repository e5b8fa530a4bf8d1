"""The shared preprocessing: deterministic, shape-stable, band-aware, torch-free."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from inference import preprocessing as P

REPO_ROOT = Path(__file__).resolve().parents[2]


def synthetic_bscan(width: int = 640, height: int = 400, curve: float = 80.0, seed: int = 0) -> Image.Image:
    """A B-scan-like image: dark vitreous, a bright curved retina band, speckle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = height * 0.45 + curve * ((xx / width - 0.5) * 2) ** 2
    band = np.exp(-(((yy - centre) / 25.0) ** 2)) * 150 + np.exp(-(((yy - centre - 30) / 6.0) ** 2)) * 90
    img = (20 + band) * rng.gamma(6.0, 1 / 6.0, size=band.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def test_preprocess_is_deterministic_with_fixed_shape():
    img = synthetic_bscan()
    a = P.preprocess(img)
    b = P.preprocess(img.copy())
    size = P.preprocessing_config()["input_size"]
    assert a.array.shape == (1, size, size)
    assert a.array.dtype == np.float32
    assert np.isfinite(a.array).all()
    np.testing.assert_array_equal(a.array, b.array)


def test_band_is_found_and_flattened_on_a_curved_scan():
    img = synthetic_bscan(curve=90)
    grey = P.to_grey(img)
    band = P.find_band(grey)
    assert band.found
    flat = P.flatten(grey, band.shifts)
    # After flattening, the brightest row of every column is (nearly) the same row.
    rows = flat[:, 40:-40].argmax(axis=0)
    assert np.percentile(rows, 90) - np.percentile(rows, 10) < 25
    assert band.top < band.bottom


def test_heatmap_maps_back_onto_the_original_image_grid():
    img = synthetic_bscan(width=700, height=300)
    pre = P.preprocess(img)
    size = P.preprocessing_config()["input_size"]
    hm = np.zeros((size, size), np.float32)
    hm[size // 2 - 10 : size // 2 + 10, size // 2 - 10 : size // 2 + 10] = 1.0
    out = P.heatmap_to_grid(hm, pre.geometry)
    step = P.HEATMAP_STEP
    assert out.shape == (-(-300 // step), -(-700 // step))
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.max() > 0.5


def test_white_registration_fill_is_removed():
    grey = np.asarray(synthetic_bscan(), dtype=np.uint8).copy()
    grey[:60, :200] = 255
    cleaned = P.remove_fill(grey)
    assert cleaned[:50, :190].max() == 0
    assert cleaned[200:, 300:].max() > 0  # tissue untouched


def test_precheck_flags_colour_uniform_and_accepts_a_bscan():
    colour = Image.fromarray(np.dstack([np.full((200, 300), v, np.uint8) for v in (200, 60, 20)]))
    pre = P.preprocess(colour)
    assert "colour" in pre.precheck_reason
    blank = Image.new("L", (300, 200), 128)
    assert P.preprocess(blank).precheck_reason
    assert P.preprocess(synthetic_bscan()).precheck_reason == ""


def test_inference_modules_do_not_import_torch():
    code = "import sys; import inference.preprocessing, inference.runtime, inference.evaluation; sys.exit('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT).returncode == 0


def test_real_scans_from_every_source_preprocess(oct_data):
    for sub in ("kermany/CNV", "octdl/NORMAL", "c8/NORMAL"):
        path = sorted((oct_data / sub).iterdir())[0]
        pre = P.preprocess(Image.open(path))
        assert pre.band.found, path
        assert pre.precheck_reason == "", path
        assert pre.array.shape[1:] == (P.preprocessing_config()["input_size"],) * 2


def test_to_grey_applies_exif_orientation_and_keeps_plain_grey_as_is():
    img = Image.fromarray(np.arange(12 * 20, dtype=np.uint8).reshape(12, 20))
    assert np.array_equal(P.to_grey(img), np.asarray(img))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=100)
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    grey = P.to_grey(decoded)
    assert grey.shape == (20, 12)
    assert np.array_equal(grey, np.asarray(ImageOps.exif_transpose(decoded)))


def test_fast_percentiles_and_medians_equal_numpy():
    rng = np.random.default_rng(3)
    for shape in [(192, 192), (7, 5), (1, 1), (2, 1)]:
        levels = rng.integers(0, 256, shape, dtype=np.uint8)
        hist = P._histogram(levels)
        values = levels.astype(np.float32)
        for q in (0.0, 1.0, 10.0, 50.0, 99.5, 100.0):
            assert P._percentile_of_levels(hist, q) == float(np.percentile(values, q))
            assert P._percentile_sorted(np.sort(values.ravel()), q) == float(np.percentile(values, q))
    x = rng.random((9, 236)).astype(np.float32)
    assert np.array_equal(P._median_last_axis(x), np.median(x, axis=-1))
    assert np.array_equal(P._median_last_axis(x[:, :235]), np.median(x[:, :235], axis=-1))


def test_flatten_equals_a_column_by_column_shift():
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    for shifts in (np.zeros(30, int), np.linspace(-12, 9, 30).round().astype(int), rng.integers(-50, 50, 30)):
        for rows in ((0, 40), (5, 22), (30, 40)):
            expected = np.zeros((rows[1] - rows[0], 30), np.uint8)
            for x in range(30):
                for i, y in enumerate(range(*rows)):
                    if 0 <= y + shifts[x] < 40:
                        expected[i, x] = grey[y + shifts[x], x]
            assert np.array_equal(P.flatten(grey, shifts, rows=rows), expected)


def test_window_filters_and_box_sums_equal_the_plain_loops():
    rng = np.random.default_rng(6)
    a = rng.integers(0, 2, (23, 31), dtype=np.uint8)
    for k in (1, 2, 3, 7, 9):
        for axis in (0, 1):
            padded = np.pad(a, [(k // 2, k - 1 - k // 2) if ax == axis else (0, 0) for ax in (0, 1)], mode="edge")
            windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=axis)
            assert np.array_equal(P._window_extreme(a, k, axis, np.minimum), windows.min(axis=-1))
            assert np.array_equal(P._window_extreme(a, k, axis, np.maximum), windows.max(axis=-1))
    levels = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    for k in (3, 6, 8):
        for axis in (0, 1):
            # The exact integer path and the cumulative-sum path agree on integer data.
            assert np.array_equal(P._box_smooth(levels, k, axis), P._box_smooth(levels.astype(np.float32), k, axis))
