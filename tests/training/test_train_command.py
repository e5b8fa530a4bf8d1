"""The training command: the candidate stage (judged on validation only, ships nothing) and the whole pipeline."""
from __future__ import annotations

import hashlib
import json

import numpy as np

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (training-only dependency, see requirements-train.txt)")
pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed (requirements-train.txt)")

from inference import evaluation as E  # noqa: E402
from training import data as D  # noqa: E402


def _weights_digest() -> dict[str, str]:
    from inference import card as C

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(C.WEIGHTS_DIR.iterdir()) if p.is_file()}


def test_frozen_blocks_sets_what_trains():
    from training.model import OctNet

    full = OctNet(pretrained=False, frozen_blocks=0)
    part = OctNet(pretrained=False, frozen_blocks=5)
    assert not any(p.requires_grad for p in full.net._conv_stem.parameters())
    assert all(p.requires_grad for b in full.net._blocks for p in b.parameters())
    assert not any(p.requires_grad for b in part.net._blocks[:5] for p in b.parameters())
    assert all(p.requires_grad for b in part.net._blocks[5:] for p in b.parameters())


def test_candidate_reports_validation_beside_the_shipped_model_and_exports_nothing(tmp_path):
    if not (D.data_dir() / "MANIFEST.tsv").is_file():
        pytest.skip(f"real OCT images not found at {D.data_dir()} (set OCT_DATA_DIR to the folder holding MANIFEST.tsv)")
    from training.train import main

    before = _weights_digest()
    args = ["--out", str(tmp_path), "--smoke", "--threads", "1", "--frozen-blocks", "0"]
    assert main([*args, "--stage", "candidate"]) == 0
    assert _weights_digest() == before
    assert not (tmp_path / "weights").exists()

    result = json.loads((tmp_path / "validation.json").read_text())
    shipped = json.loads((D.REPO_ROOT / "inference" / "weights" / "model.json").read_text())["version"]
    assert set(result) == {"candidate", f"shipped {shipped}"}
    for rep in result.values():
        cm = rep["confusion_matrix"]
        n = sum(map(sum, cm))
        assert rep["n"] == n > 0
        assert rep["errors"] == n - sum(cm[i][i] for i in range(len(cm)))
        assert rep["nll"] > 0
    assert json.loads((tmp_path / "train_wall.json").read_text())["frozen_blocks"] == 0

    # Re-exporting the checkpoint under another recipe is refused before anything is written.
    with pytest.raises(SystemExit) as exc:
        main([*args[:-1], "5", "--stage", "final", "--reuse-checkpoint"])
    assert exc.value.code == 2
    # So is re-exporting it as if another training seed had trained it.
    with pytest.raises(SystemExit) as exc:
        main([*args, "--train-seed", "7", "--stage", "final", "--reuse-checkpoint"])
    assert exc.value.code == 2
    assert not (tmp_path / "weights").exists()


def test_whole_command_runs_loso_beside_the_final_model_and_writes_the_card(tmp_path):
    """The documented command end to end (tiny subset): LOSO in a second process on a CPU."""
    if not (D.data_dir() / "MANIFEST.tsv").is_file():
        pytest.skip(f"real OCT images not found at {D.data_dir()} (set OCT_DATA_DIR to the folder holding MANIFEST.tsv)")
    from training.train import MODEL_VERSION, main

    before = _weights_digest()
    assert main(["--out", str(tmp_path), "--smoke", "--threads", "2"]) == 0
    assert _weights_digest() == before

    assert "LOSO stage done" in (tmp_path / "loso.log").read_text()
    card = json.loads((tmp_path / "weights" / "model.json").read_text())
    assert card["version"] == MODEL_VERSION
    assert card["card"]["loso"]["run_of"] == MODEL_VERSION
    assert card["card"]["loso"]["frozen_blocks"] == 0
    assert card["card"]["device"] == "cpu, 1 torch thread(s)"
    assert (tmp_path / "weights" / "oct-lite0-v1.onnx").is_file()
    assert card["card"]["parity_max_abs_diff"] < 1e-4
    assert f"# Model card: oct-lite0 {MODEL_VERSION}" in (tmp_path / "model-card.md").read_text()


def test_kermany_out_stage_trains_without_kermany_and_tests_on_kermany_only(tmp_path):
    if not (D.data_dir() / "MANIFEST.tsv").is_file():
        pytest.skip(f"real OCT images not found at {D.data_dir()} (set OCT_DATA_DIR to the folder holding MANIFEST.tsv)")
    from training import robustness as R
    from training.train import main

    before = _weights_digest()
    assert main(["--out", str(tmp_path), "--smoke", "--threads", "1", "--stage", "loso-kermany"]) == 0
    assert _weights_digest() == before
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "loso.json").exists()

    lo = json.loads((tmp_path / "loso_kermany.json").read_text())
    # Recorded with the recipe it was trained with (the defaults: v1.4.0's).
    assert lo["held_out_source"] == "kermany" and (lo["augment"], lo["train_seed"]) == ("robust-strong", 1)
    # Trained on OCTDL and C8 only: no DRUSEN to learn from, and none of Kermany.
    assert set(lo["train_classes"]) <= {"CNV", "DME", "NORMAL"}
    assert lo["train_images"] == sum(lo["train_classes"].values())
    rep = lo["kermany_in_set"]
    assert rep["n"] == sum(map(sum, rep["confusion_matrix"])) > 0
    assert rep["per_class"]["DRUSEN"]["n"] == 0
    # Its logits are kept, so that an ensemble's reading can be the mean of its members' (training.ensemble).
    z = np.load(tmp_path / "loso_kermany_logits.npz")
    drusen = z["kermany_y"] == D.CLASSES.index("DRUSEN")
    assert z["kermany"].shape == (len(z["kermany_y"]), 4) and int((~drusen).sum()) == rep["n"]
    assert float(z["temperature"]) == pytest.approx(lo["temperature"])
    again = D.kermany_out_report(E.softmax(z["kermany"] / float(z["temperature"])), z["kermany_y"])["kermany_in_set"]
    assert again["confusion_matrix"] == rep["confusion_matrix"] and again["accuracy"] == pytest.approx(rep["accuracy"])
    section = R.card_section([], "test", kermany_out=[lo])
    assert "trained without Kermany" in section and "has not been made" not in section
    assert R.card_section([], "test").count("train-without-Kermany run, which has not been made") == 1
