"""Is a retrained model as fast as the one it replaces? Two ONNX files, one process.

A new model version changes the weights, and may change the graph. This script runs
both files' sessions (one thread each) on the same preprocessed real B-scans, in
alternation so that a noisy machine slows both alike, and prints each one's p50/p95
and the ratio. Needs only the app environment::

    git show <old commit>:inference/weights/oct-lite0-v1.onnx > /tmp/old.onnx
    .venv/bin/python bench/model_ab.py /tmp/old.onnx            # against the shipped model

The last line prints the ratio (new / old; above 1 means the new model is slower).

``--end-to-end`` times what serving one B-scan costs instead of the graph alone:
``inference.runtime.Model.predict_images`` on one decoded image (preprocessing, the
graph, the heatmap mapped back to the image and the quality flag), both models in
alternation with one thread. Issue #13 allows an ensemble or test-time augmentation
only "if the serving cost stays within 2x of today's per-B-scan time"; this is the
ratio that limit is checked on.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import card as C
from inference import preprocessing as P  # noqa: E402


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def sample_paths(n: int) -> list[Path]:
    """n B-scans spread over the data set (none when it is absent: the callers time noise)."""
    root = Path(os.environ.get("OCT_DATA_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "oct"))
    every = sorted(root.glob("**/*.jp*g"))
    paths = every[:: max(1, len(every) // max(n, 1))][:n]
    if not paths:
        print(f"no B-scans under {root}: timing on noise instead")
    return paths


def real_inputs(n: int) -> list[np.ndarray]:
    """Preprocessed inputs [1, 1, S, S] of n B-scans in the data set (or noise)."""
    cfg = P.preprocessing_config(C.load_model_json())
    paths = sample_paths(n)
    if not paths:
        size = int(cfg["input_size"])
        return [np.random.default_rng(i).normal(size=(1, 1, size, size)).astype(np.float32) for i in range(n)]
    return [P.preprocess(Image.open(p), cfg).array[None] for p in paths]


def real_images(n: int) -> list[Image.Image]:
    """n B-scans in the data set, decoded (or noise images)."""
    paths = sample_paths(n)
    if not paths:
        rng = np.random.default_rng(0)
        return [Image.fromarray(rng.integers(0, 255, (496, 512), dtype=np.uint8)) for _ in range(n)]
    out = []
    for p in paths:
        with Image.open(p) as img:
            img.load()
            out.append(img.copy())
    return out


def end_to_end(args: argparse.Namespace) -> None:
    from inference import runtime as R

    # Each file with the model.json beside it, or the shipped card when there is none.
    old, new = (R.load_model(p, intra_op_threads=1, inter_op_threads=1) for p in (args.old, args.new))
    images = real_images(args.images)
    for img in images:
        old.predict_images([img])
        new.predict_images([img])
    t_old, t_new = [], []
    for i in range(args.iterations):
        img = images[i % len(images)]
        t0 = time.perf_counter()
        old.predict_images([img])
        t1 = time.perf_counter()
        new.predict_images([img])
        t2 = time.perf_counter()
        t_old.append((t1 - t0) * 1e3)
        t_new.append((t2 - t1) * 1e3)
    for name, m, t in (("old", old, t_old), ("new", new, t_new)):
        print(f"{name} {m.path} ({m.version}): one B-scan end to end p50 {np.median(t):.2f} ms, p95 {np.percentile(t, 95):.2f} ms (n={len(t)})")
    print(f"KEY end-to-end new/old p50 {np.median(t_new) / np.median(t_old):.3f} ({len(images)} images, 1 thread, alternating)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path, help="the baseline .onnx")
    parser.add_argument("new", type=Path, nargs="?", default=C.WEIGHTS_DIR / "oct-lite0-v1.onnx", help="default: the shipped model")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--end-to-end", action="store_true", help="time runtime.Model.predict_images on one decoded image, not session.run")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args)
        return

    old, new = session(args.old), session(args.new)
    inputs = real_inputs(args.images)

    def feeds(sess: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
        # An ensemble of members with their own windows has one input per member: the
        # graph's cost does not depend on the crop, so each gets the same array.
        return {i.name: x for i in sess.get_inputs()}

    for x in inputs:
        old.run(None, feeds(old, x))
        new.run(None, feeds(new, x))
    t_old, t_new = [], []
    for i in range(args.iterations):
        x_old, x_new = feeds(old, inputs[i % len(inputs)]), feeds(new, inputs[i % len(inputs)])
        t0 = time.perf_counter()
        old.run(None, x_old)
        t1 = time.perf_counter()
        new.run(None, x_new)
        t2 = time.perf_counter()
        t_old.append((t1 - t0) * 1e3)
        t_new.append((t2 - t1) * 1e3)
    for name, path, t in (("old", args.old, t_old), ("new", args.new, t_new)):
        print(f"{name} {path}: session.run p50 {np.median(t):.2f} ms, p95 {np.percentile(t, 95):.2f} ms (n={len(t)})")
    print(f"KEY new/old p50 {np.median(t_new) / np.median(t_old):.3f} ({len(inputs)} inputs, 1 thread, alternating runs)")


if __name__ == "__main__":
    main()
