"""Benchmark the serving path of the OCT model (figures, not a test).

Measures, in one process and on the same images:

* one B-scan end to end on ONE thread: decode the file, preprocess, run the ONNX
  session, map the heatmap back to the original image (p50 / p95); also the same
  plus encoding the overlay PNG that the worker stores, and the session run alone;
* batched throughput on TWO threads: the batch is split between two threads, each
  preprocessing its share and running it through the one shared session
  (``OCT_BATCH_THREADS=2``, one intra-op thread per run); for reference also the
  session run alone on two intra-op threads;
* baseline A: a new ONNX session per request (what the original prototype did);
* baseline B: the same network in PyTorch eager mode (one thread), same pipeline,
  when torch and ``training/`` are importable (e.g. ``.venv-train/bin/python``).

Usage::

    .venv/bin/python bench/inference.py                 # ORT figures, baseline A
    .venv-train/bin/python bench/inference.py           # plus baseline B (torch)
    python bench/inference.py --model /path/x.onnx --images 64 --iterations 200

The last line prints the key figures and ratios.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from inference import preprocessing as P  # noqa: E402
from inference.heatmap import heatmap_overlay_png  # noqa: E402
from inference import runtime  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load_images(count: int) -> list[bytes]:
    folder = Path(os.environ.get("OCT_DATA_DIR", REPO.parent / "shared" / "oct"))
    paths = sorted(folder.glob("kermany/*/*.jp*g")) + sorted(folder.glob("octdl/*/*.jp*g"))
    if paths:
        step = max(1, len(paths) // count)
        return [p.read_bytes() for p in paths[::step][:count]]
    print(f"note: no real images under {folder}; using synthetic 512x496 B-scans")
    sys.path.insert(0, str(REPO / "tests"))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        arr = np.clip(rng.normal(40, 20, (496, 512)), 0, 255).astype(np.uint8)
        arr[200:260] += 120
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def timed(fn, items: list, iterations: int, warmup: int = 5) -> list[float]:
    for i in range(warmup):
        fn(items[i % len(items)])
    times = []
    for i in range(iterations):
        t0 = time.perf_counter()
        fn(items[i % len(items)])
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def describe(label: str, times: list[float]) -> None:
    print(f"{label:<58} p50 {pct(times, 50):7.2f} ms   p95 {pct(times, 95):7.2f} ms   (n={len(times)})")


def torch_baseline(model_path: Path, card: dict, blobs: list[bytes], iterations: int):
    """Same network, same decoding, preprocessing and heatmap mapping, PyTorch eager on one thread."""
    try:
        import torch

        from training.model import ExportWrapper, OctNet
    except Exception as exc:  # noqa: BLE001 - optional baseline
        print(f"baseline B (PyTorch eager) skipped: {type(exc).__name__}: {exc} "
              "(run with .venv-train/bin/python to include it)")
        return None, None
    torch.set_num_threads(1)
    size = int(P.preprocessing_config(card)["input_size"])
    # ImageNet weights (shipped in the training requirements): realistic values, so
    # no denormal or all-zero paths flatter or penalise the baseline.
    net = OctNet(image_size=size, pretrained=True)
    checkpoint = next(iter(sorted((REPO / "training" / "runs").glob("*/best.pt"))), None)
    weights_note = "ImageNet weights (timing only: same architecture and shapes as the shipped model)"
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
            weights_note = f"weights from {checkpoint.relative_to(REPO)}"
        except Exception as exc:  # noqa: BLE001 - timing does not depend on the values
            weights_note = f"random weights ({type(exc).__name__} loading {checkpoint.name})"
    # An ensemble runs one network per member (the same architecture: timing only).
    members = len((card.get("ensemble") or {}).get("members") or []) or 1
    temperature = card.get("temperature", 1.0)
    wrapper = ExportWrapper(net, float(temperature[0] if isinstance(temperature, list) else temperature), size).eval()
    cfg = P.preprocessing_config(card)
    print(f"baseline B: PyTorch {torch.__version__} eager, 1 thread, {weights_note}, {members} network(s) per B-scan")

    def one(data: bytes) -> None:
        pre = P.preprocess(runtime.decode_image(data), cfg)
        with torch.inference_mode():
            for _ in range(members):
                probs, heat, score = wrapper(torch.from_numpy(pre.array[None]))
        P.heatmap_to_grid(heat[0].numpy(), pre.geometry)

    arrays = [torch.from_numpy(P.preprocess(runtime.decode_image(b), cfg).array[None]) for b in blobs]

    def infer(x) -> None:
        with torch.inference_mode():
            for _ in range(members):
                wrapper(x)

    return timed(one, blobs, iterations, warmup=20), timed(infer, arrays, iterations, warmup=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("OCT_MODEL_PATH") or None, help=".onnx (default: shipped)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--session-requests", type=int, default=20, help="requests for baseline A")
    args = parser.parse_args()

    blobs = load_images(args.images)
    model1 = runtime.load_model(args.model, intra_op_threads=1, inter_op_threads=1)
    print(f"model {model1.name} v{model1.version} ({model1.path.name}, sha256 {model1.sha256[:12]}), "
          f"{len(blobs)} images, cpu count {os.cpu_count()}, onnxruntime {runtime.ort.__version__}")
    decoded = [runtime.decode_image(b) for b in blobs]
    cfg = P.preprocessing_config(model1.card)
    arrays = [P.preprocess(img, cfg).array[None] for img in decoded]

    # --- ours, one thread ---------------------------------------------------------------
    def end_to_end(data: bytes) -> None:
        model1.predict_images([runtime.decode_image(data)])

    def end_to_end_png(data: bytes) -> None:
        img = runtime.decode_image(data)
        reading = model1.predict_images([img])[0]
        heatmap_overlay_png(img, reading.heatmap)

    e2e = timed(end_to_end, blobs, args.iterations)
    e2e_png = timed(end_to_end_png, blobs, args.iterations)
    infer = timed(model1.run_arrays, arrays, args.iterations)
    print("\n== ONNX Runtime, one session per process, 1 thread")
    describe("end to end: decode+preprocess+inference+heatmap", e2e)
    describe("  ... plus overlay PNG encode (what the worker stores)", e2e_png)
    describe("inference alone (session.run, 1 image)", infer)

    # --- ours, batched, two threads -----------------------------------------------------
    model2 = runtime.load_model(args.model, intra_op_threads=1, inter_op_threads=1, batch_threads=2)
    model2_intra = runtime.load_model(args.model, intra_op_threads=2, inter_op_threads=1)
    batches = [decoded[i : i + args.batch] for i in range(0, len(decoded) - args.batch + 1, args.batch)] or [decoded]
    model2.predict_images(batches[0])  # warm-up
    rounds = max(2, (args.iterations * 2) // (args.batch * len(batches)))
    n = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for batch in batches:
            model2.predict_images(batch)
            n += len(batch)
    batched_ips = n / (time.perf_counter() - t0)
    stacked = np.concatenate(arrays[: args.batch])
    model2_intra.run_arrays(stacked)  # warm-up
    t0 = time.perf_counter()
    for _ in range(rounds * len(batches)):
        model2_intra.run_arrays(stacked)
    infer_ips = rounds * len(batches) * len(stacked) / (time.perf_counter() - t0)
    print(f"\n== ONNX Runtime batched (batch {args.batch}), 2 threads")
    print(f"{'end to end, 2 batch threads (decode done; preprocess+inference+heatmap)':<58} {batched_ips:7.1f} images/s")
    print(f"{'inference alone, one run on 2 intra-op threads':<58} {infer_ips:7.1f} images/s")

    # --- baseline A: a new session per request -------------------------------------------
    # What the prototype did: build the session for every prediction, then the same
    # pipeline. Only the session is new (no model-file hash or card parsing).
    def new_session() -> "runtime.ort.InferenceSession":
        opts = runtime.ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = runtime.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return runtime.ort.InferenceSession(str(model1.path), sess_options=opts, providers=["CPUExecutionProvider"])

    def session_per_request(data: bytes) -> None:
        session = new_session()
        pre = model1.preprocess(runtime.decode_image(data))  # one crop per graph input
        feeds = {name: p.array[None] for name, p in zip(model1.input_names, pre)}
        _, heat, _ = session.run(["probabilities", "heatmap", "oct_score"], feeds)
        P.heatmap_to_grid(heat[0], pre[0].geometry)

    def session_per_request_inference(array: np.ndarray) -> None:
        new_session().run(["probabilities", "heatmap", "oct_score"], {name: array for name in model1.input_names})

    base_a = timed(session_per_request, blobs, args.session_requests, warmup=1)
    base_a_infer = timed(session_per_request_inference, arrays, args.session_requests, warmup=1)
    print("\n== Baseline A: new ONNX session per request, 1 thread")
    describe("end to end incl. session creation", base_a)
    describe("inference alone incl. session creation", base_a_infer)

    # --- baseline B: PyTorch eager -------------------------------------------------------
    print("\n== Baseline B: PyTorch eager")
    torch_e2e, torch_infer = torch_baseline(model1.path, model1.card, blobs, max(50, args.iterations // 2))
    if torch_e2e:
        describe("end to end: decode+preprocess+inference+heatmap", torch_e2e)
        describe("inference alone", torch_infer)

    # --- summary ---------------------------------------------------------------------
    p50, p50_infer = pct(e2e, 50), pct(infer, 50)
    ratio_a = pct(base_a, 50) / p50
    ratio_a_inf = pct(base_a_infer, 50) / p50_infer
    ratio_b = f"{pct(torch_e2e, 50) / p50:.1f}x" if torch_e2e else "n/a"
    ratio_b_inf = f"{pct(torch_infer, 50) / p50_infer:.1f}x" if torch_infer else "n/a"
    print(
        f"\nKEY single p50 {p50:.1f} ms (p95 {pct(e2e, 95):.1f}) | batched 2 threads {batched_ips:.0f} img/s | "
        f"vs session-per-request {ratio_a:.1f}x end to end, {ratio_a_inf:.1f}x inference | "
        f"vs PyTorch eager {ratio_b} end to end, {ratio_b_inf} inference"
    )


if __name__ == "__main__":
    main()
