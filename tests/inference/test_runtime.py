"""The serving runtime with the shipped ONNX model (onnxruntime only)."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import card as C
from inference import preprocessing as P

REPO_ROOT = Path(__file__).resolve().parents[2]
CARD = C.load_model_json()
ONNX = C.WEIGHTS_DIR / str(CARD.get("onnx", "oct-lite0-v1.onnx"))
FIXED_SAMPLE = C.WEIGHTS_DIR / "fixed_sample.tsv"

pytestmark = pytest.mark.skipif(not ONNX.is_file(), reason=f"shipped model {ONNX} is missing (run python -m training.train)")


@pytest.fixture(scope="module")
def model():
    from inference import runtime

    return runtime.load_model(intra_op_threads=2)


def synthetic_bscan(width: int = 640, height: int = 400) -> Image.Image:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = height * 0.45 + 60 * ((xx / width - 0.5) * 2) ** 2
    band = np.exp(-(((yy - centre) / 25.0) ** 2)) * 150 + np.exp(-(((yy - centre - 30) / 6.0) ** 2)) * 90
    return Image.fromarray(np.clip((20 + band) * rng.gamma(6.0, 1 / 6.0, band.shape), 0, 255).astype(np.uint8))


def test_model_metadata_matches_file(model):
    import hashlib

    assert model.classes == ("CNV", "DME", "DRUSEN", "NORMAL")
    assert model.sha256 == hashlib.sha256(ONNX.read_bytes()).hexdigest()
    assert model.version and model.name
    assert "temperature" in model.card and "card" in model.card
    # One member is about 13 MiB; the shipped 1.5.0 is two members in one graph (about 26 MiB).
    assert ONNX.stat().st_size <= 40 * 1024 * 1024


def test_onnx_graph_inputs_outputs_and_dynamic_batch(model):
    size = model.input_size
    for n in (1, 3):
        probs, heat, score = model.run_arrays(np.zeros((n, 1, size, size), np.float32))
        assert probs.shape == (n, 4)
        assert heat.shape == (n, size, size)
        assert score.shape == (n,)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
    import onnxruntime as ort

    sess = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    # One input per framing of the scan: "input", or one per ensemble member with its own window.
    members = model.card.get("member_inputs") or [{"input": "input", "heatmap": "heatmap"}]
    assert [i.name for i in sess.get_inputs()] == [m["input"] for m in members] == model.input_names
    for inp in sess.get_inputs():
        assert inp.type == "tensor(float)"
        assert inp.shape[1:] == [1, size, size] and not isinstance(inp.shape[0], int)  # dynamic batch
    extra = [m["heatmap"] for m in members[1:]]
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "heatmap", "oct_score", *extra]
    meta = sess.get_modelmeta()
    assert meta is not None


def test_reading_has_calibrated_probabilities_and_heatmap_over_the_original_image(model):
    img = synthetic_bscan(700, 350)
    (r,) = model.predict_images([img])
    assert set(r.probabilities) == set(model.classes)
    assert abs(sum(r.probabilities.values()) - 1.0) < 1e-5
    assert r.predicted == max(r.probabilities, key=r.probabilities.get)
    assert r.confidence == pytest.approx(max(r.probabilities.values()))
    # One value every HEATMAP_STEP (4) original pixels: ceil(350 / 4) x ceil(700 / 4).
    assert r.heatmap.shape == (88, 175) and r.heatmap.dtype == np.float32
    assert 0.0 <= r.heatmap.min() and r.heatmap.max() <= 1.0
    assert 0.0 <= r.oct_score <= 1.0
    assert r.inference_ms > 0


def test_decode_image_reads_images_and_rejects_garbage(model):
    from inference.runtime import UnreadableImage, decode_image

    buf = io.BytesIO()
    synthetic_bscan().save(buf, format="PNG")
    reading = model.predict_images([decode_image(buf.getvalue())])[0]
    assert reading.heatmap.shape == (100, 160)
    with pytest.raises(UnreadableImage):
        decode_image(b"definitely not an image")
    assert issubclass(UnreadableImage, ValueError)


def test_heatmap_overlay_is_rgba_png_transparent_where_cold():
    from inference.heatmap import heatmap_overlay_png

    img = Image.new("L", (120, 80))
    hm = np.zeros((80, 120), np.float32)
    hm[20:40, 30:60] = 1.0
    out = Image.open(io.BytesIO(heatmap_overlay_png(img, hm)))
    assert out.format == "PNG" and out.size == (120, 80)
    rgba = np.asarray(out.convert("RGBA"))
    assert rgba[0, 0, 3] == 0 and rgba[30, 45, 3] > 0
    assert tuple(rgba[30, 45, :3]) != (0, 0, 0)  # hot pixels are coloured


def test_heatmap_overlay_scales_a_coarse_grid_to_the_image():
    from inference.heatmap import heatmap_overlay_png

    img = Image.new("L", (120, 80))
    grid = np.zeros((20, 30), np.float32)  # one value every 4 px
    grid[5:10, 15:30] = 1.0  # hot: right half, rows 20..40
    rgba = np.asarray(Image.open(io.BytesIO(heatmap_overlay_png(img, grid))).convert("RGBA"))
    assert rgba.shape == (80, 120, 4)
    assert rgba[30, 100, 3] > 0 and rgba[30, 20, 3] == 0 and rgba[70, 100, 3] == 0


def test_the_overlay_drawn_from_the_stored_grid_is_the_one_drawn_at_reading_time(model):
    from inference.heatmap import heatmap_grid_png, heatmap_overlay_from_grid, heatmap_overlay_png

    rng = np.random.default_rng(7)
    img = Image.new("L", (121, 83))
    grids = [rng.uniform(-0.2, 1.2, (21, 31)).astype(np.float32),  # values outside [0, 1] clipped alike
             model.predict_images([Image.fromarray(rng.integers(0, 255, (300, 400), dtype=np.uint8))])[0].heatmap]
    for grid in grids:
        size = img.size if grid.shape == (21, 31) else (400, 300)
        stored = heatmap_grid_png(grid)
        assert len(stored) < 12_000 and Image.open(io.BytesIO(stored)).mode == "L"
        assert heatmap_overlay_from_grid(stored, size) == heatmap_overlay_png(Image.new("L", size), grid)


def test_get_model_is_a_thread_safe_singleton():
    from inference import runtime

    got = []
    threads = [threading.Thread(target=lambda: got.append(runtime.get_model())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in got}) == 1


def test_runtime_works_without_django_settings():
    code = (
        "import numpy as np; from PIL import Image; from inference.runtime import load_model; "
        "m = load_model(); r = m.predict_images([Image.new('L', (300, 200), 90)])[0]; print(r.gate_passed)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"  # a uniform grey image is not an OCT B-scan


def test_shipped_model_classifies_the_fixed_sample_as_the_card_claims(model, oct_data):
    with open(FIXED_SAMPLE, encoding="utf-8") as fh:
        rows = list(csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t"))
    assert len(rows) == 40
    images = [Image.open(oct_data / r["path"]) for r in rows]
    readings = model.predict_images(images)
    accuracy = np.mean([rd.predicted == r["class"] for rd, r in zip(readings, rows)])
    claimed = CARD["card"]["fixed_sample"]["accuracy"]
    assert accuracy >= claimed - 1e-9
    assert all(rd.gate_passed for rd in readings)


def test_batch_spread_over_threads_gives_the_same_readings_in_order(model):
    from inference import runtime

    images = [synthetic_bscan(500 + 20 * i, 300 + 10 * i) for i in range(5)]
    threaded = runtime.load_model(batch_threads=2)
    one = [model.predict_images([img])[0] for img in images]
    many = threaded.predict_images(images)
    assert [r.heatmap.shape for r in many] == [r.heatmap.shape for r in one]
    for a, b in zip(one, many):
        assert a.predicted == b.predicted
        for c in a.probabilities:
            assert a.probabilities[c] == pytest.approx(b.probabilities[c], abs=1e-5)
