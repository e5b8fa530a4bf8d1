"""``training.ensemble --stage final``: ship an ensemble a written rule has chosen.

Copies the members beside the run (the first member may be the shipped file it
replaces), writes the ensemble graph into ``inference/weights/``, fits its gate
threshold on the validation split as ``training.train`` does, evaluates the written
file through ``inference.runtime`` on the test split and writes the model card.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from inference import evaluation as E
from inference import preprocessing as P
from training import data as D
from training import ensemble as En
from training import report


def _served_probs(served: Any, images: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    probs, _, scores, _ = report.run_served(served, images)
    return probs, scores


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """A member's probabilities before its temperature: softmax(T * log p) = softmax(z) when p = softmax(z / T)."""
    return E.softmax(float(temperature) * np.log(np.clip(probs, 1e-12, 1.0)))


RECORD_KEYS = ("command", "seed", "manifest_sha256", "versions", "device", "hyperparameters", "splits")


def member_records(members: list[Path], cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each member's training record (its model.json's ``card``), checked to share the split and the data."""
    records = [c.get("card") or {} for c in cards]
    for p, r in zip(members, records):
        missing = [k for k in RECORD_KEYS if k not in r]
        if missing:
            raise SystemExit(f"{p.parent / 'model.json'} lacks {', '.join(missing)}: export the member with this version of training.train")
        if (r["seed"], r["manifest_sha256"]) != (records[0]["seed"], records[0]["manifest_sha256"]):
            raise SystemExit(f"{p}: another patient split or MANIFEST.tsv than {members[0]}")
    return records


def ship(args: argparse.Namespace, cards: list[dict[str, Any]], loso: dict[str, Any], t0: float) -> int:
    import onnxruntime

    from inference import runtime as R

    root = D.data_dir()
    first = cards[0]
    records = member_records(args.members, cards)
    seed = int(records[0]["seed"])
    if records[0]["manifest_sha256"] != D.manifest_sha256(root):
        raise SystemExit(f"{args.members[0]}'s card was made from another MANIFEST.tsv than the one at {root}")
    # The members as they were, beside the run (the first may be the file about to be replaced).
    kept = args.out / "members"
    kept.mkdir(parents=True, exist_ok=True)
    members: list[Path] = []
    for k, (path, card) in enumerate(zip(args.members, cards)):
        folder = kept / f"m{k}"
        folder.mkdir(exist_ok=True)
        shutil.copyfile(path, folder / En.ONNX_NAME)
        (folder / "model.json").write_text(json.dumps(card, indent=1))
        members.append(folder / En.ONNX_NAME)

    items = D.read_manifest(root)
    splits = D.split_items(items, D.split_patients(items, seed=seed))
    if args.smoke:
        rs = random.Random(0)
        splits = {k: rs.sample(v, min(len(v), 40)) for k, v in splits.items()}
    val_in = [i for i in splits["val"] if i.in_set]
    test_in = [i for i in splits["test"] if i.in_set]
    val_images, test_images = report.load_images(root, val_in), report.load_images(root, test_in)

    weights = (args.out / "weights") if args.smoke else En.WEIGHTS_DIR
    onnx_path = weights / En.ONNX_NAME
    own = En.own_windows(cards)
    inputs = En.member_inputs(cards) if own else []
    En.compose(members, onnx_path, own_inputs=own)
    size = int(first["preprocessing"]["input_size"])
    cfgs = [P.preprocessing_config(c) for c in cards]
    pre = [P.preprocess_many(img, cfgs) for img in test_images[:16]]
    xs = [np.stack([p[k].array for p in pre]) for k in range(len(cards))]
    max_diff = En.parity(members, onnx_path, xs if own else xs[0])
    shape = f"float32 [N, 1, {size}, {size}]"
    card: dict[str, Any] = {
        "name": first["name"],
        "version": En.ENSEMBLE_VERSION,
        "onnx": En.ONNX_NAME,
        "classes": first["classes"],
        "temperature": [float(c["temperature"]) for c in cards],
        "gate_threshold": 0.5,
        "preprocessing": first["preprocessing"],
        "inputs": (
            {m["input"]: f"{shape}, inference.preprocessing.preprocess() with member {k}'s preprocessing (member_inputs)"
             for k, m in enumerate(inputs)}
            if own else {"input": f"{shape}, inference.preprocessing.preprocess()"}
        ),
        "outputs": {
            "probabilities": "float32 [N, 4], the mean of the members' softmax(logits / temperature), classes in model.json order",
            **(
                {m["heatmap"]: f"float32 [N, {size}, {size}] in [0, 1], member {k}'s class-activation map of its predicted class, "
                 "on its own crop (the runtime averages the members' maps on the original image)"
                 for k, m in enumerate(inputs)}
                if own else
                {"heatmap": f"float32 [N, {size}, {size}] in [0, 1], the mean of the members' class-activation maps of their predicted class"}
            ),
            "oct_score": "float32 [N], the mean of the members' probabilities that the input is a retinal OCT B-scan",
        },
        **({"member_inputs": inputs} if own else {}),
        "ensemble": {
            "members": [
                {"version": c["version"], "sha256": En.sha256(p), "temperature": float(c["temperature"]), "train_seed": s}
                for p, c, s in zip(members, cards, loso["train_seed"])
            ]
        },
    }
    # Gate threshold on val, as training.train fits it: 0.5 unless that would turn away
    # more than 0.5% of the real val scans, then the 0.5th percentile of their OCT scores.
    served = R.Model(onnx_path, card, intra_op_threads=2, inter_op_threads=1)
    val_probs, val_scores = _served_probs(served, val_images)
    card["gate_threshold"] = served.gate_threshold = float(min(0.5, np.percentile(val_scores, 0.5)))
    # Before calibration: the mean of the members' softmax(logits), from their calibrated outputs.
    before: dict[str, list[np.ndarray]] = {"val": [], "test": []}
    for path, c in zip(members, cards):
        m = R.Model(path, c, intra_op_threads=2, inter_op_threads=1)
        for split, images in (("val", val_images), ("test", test_images)):
            before[split].append(uncalibrated(_served_probs(m, images)[0], c["temperature"]))
    results = report.evaluate_all(
        served=served,
        root=root,
        splits=splits,
        items=items,
        test_probs_before=np.mean(before["test"], axis=0),
        val_probs_before=np.mean(before["val"], axis=0),
        val_probs_after=val_probs,
        seed=seed,
        smoke=args.smoke,
    )
    hp = dict(records[0]["hyperparameters"])
    hp["train_seed"] = loso["train_seed"]
    train_walls = [r.get("final_train_wall_s") for r in records]
    command = "python -m training.ensemble --stage final " + " ".join(
        ["--members", *map(str, args.members), "--loso", *map(str, args.loso), "--out", str(args.out)]
    )
    card["card"] = {
        "command": command,
        "member_commands": [r["command"] for r in records],
        "manifest_sha256": records[0]["manifest_sha256"],
        "seed": seed,
        "versions": {**records[0]["versions"], "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "device": records[0]["device"],
        "hyperparameters": hp,
        "splits": records[0]["splits"],
        "loso": loso,
        "note": args.card_note,
        "parity_max_abs_diff": max_diff,
        "final_train_wall_s": float(sum(w for w in train_walls if w)),
        "wall_s": time.time() - t0 + float(sum(w for w in train_walls if w)),
        **results,
    }
    model_json = weights / "model.json"
    model_json.write_text(json.dumps(E.json_safe(card), indent=1))
    report.write_card(card, model_json, smoke=args.smoke, out_dir=args.out)
    print(f"ensemble {En.ENSEMBLE_VERSION} written to {onnx_path} (graph vs mean of the members: max abs diff {max_diff:.2e}); "
          f"test accuracy {results['test']['accuracy']:.4f}", flush=True)
    return 0
