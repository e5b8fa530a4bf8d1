"""Measure the per-eye reading rule against per-B-scan readings (docs/volumes.md).

Runs in the app's venv (ONNX Runtime, no PyTorch)::

    .venv/bin/python -m training.evaluate_eyes [--json var/eyes.json]

The data sets hold no volumes, so an "eye" here is one patient's B-scans of the
validation or test split (the patient-level split of ``training.data``, seed of the
shipped model), for patients with at least two in-set B-scans. Its truth is the most
urgent label among them (urgent if any B-scan is CNV or DME; normal if all are
NORMAL). ``k`` and ``t`` are chosen on the validation split by the rule fixed before
the run (``choose``); the test split is then read once with that choice.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from cases.diagnoses import URGENCY_BY_DIAGNOSIS, Urgency
from inference import runtime
from inference.volume_reading import SliceReading, eye_reading
from training import data as D

SEED = 20240501
GRID_K = (1, 2, 3)
GRID_T = (0.3, 0.5, 0.7, 0.9)


def read_split(model: runtime.Model, root: Path, items: list[D.Item]) -> dict[str, list[dict[str, Any]]]:
    """Per patient: each in-set B-scan's label and calibrated probabilities."""
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for start in range(0, len(items), 16):
        batch = items[start : start + 16]
        images = []
        for it in batch:
            with Image.open(root / it.path) as img:
                images.append(img.convert("L"))
        for it, reading in zip(batch, model.predict_images(images), strict=True):
            by_patient[it.patient].append({"path": it.path, "label": it.label, "p": dict(reading.probabilities)})
    return dict(by_patient)


def _urgent(label: str) -> bool:
    return URGENCY_BY_DIAGNOSIS[label] == Urgency.URGENT


def figures(patients: dict[str, list[dict[str, Any]]], *, k: int, t: float) -> dict[str, Any]:
    """Per-eye and per-B-scan urgent sensitivity and normal specificity."""
    eyes = {pid: scans for pid, scans in patients.items() if len(scans) >= 2}
    eye = {"urgent": 0, "urgent_hit": 0, "normal": 0, "normal_not_urgent": 0, "normal_called_normal": 0,
           "n": len(eyes), "other": 0}
    scan = {"urgent": 0, "urgent_hit": 0, "normal": 0, "normal_not_urgent": 0, "n": 0}
    for scans in eyes.values():
        slices = [SliceReading(slice_index=i, probabilities=s["p"]) for i, s in enumerate(scans)]
        reading = eye_reading(slices, min_slices=k, min_p=t)
        labels = {s["label"] for s in scans}
        if any(_urgent(label) for label in labels):
            eye["urgent"] += 1
            eye["urgent_hit"] += reading.urgent
        elif labels == {"NORMAL"}:
            eye["normal"] += 1
            eye["normal_not_urgent"] += not reading.urgent
            eye["normal_called_normal"] += reading.diagnosis == "NORMAL"
        else:
            eye["other"] += 1
        for s in scans:
            scan["n"] += 1
            called_urgent = sum(s["p"].get(c, 0.0) for c in ("CNV", "DME")) >= 0.5
            if _urgent(s["label"]):
                scan["urgent"] += 1
                scan["urgent_hit"] += called_urgent
            elif s["label"] == "NORMAL":
                scan["normal"] += 1
                scan["normal_not_urgent"] += not called_urgent

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "k": k, "t": t,
        "eyes": eye["n"], "urgent_eyes": eye["urgent"], "normal_eyes": eye["normal"], "other_eyes": eye["other"],
        "eye_urgent_hits": eye["urgent_hit"], "eye_normal_not_urgent": eye["normal_not_urgent"],
        "bscan_urgent": scan["urgent"], "bscan_urgent_hits": scan["urgent_hit"],
        "bscan_normal": scan["normal"], "bscan_normal_not_urgent": scan["normal_not_urgent"],
        "eye_urgent_sensitivity": ratio(eye["urgent_hit"], eye["urgent"]),
        "eye_normal_specificity": ratio(eye["normal_not_urgent"], eye["normal"]),
        "eye_normal_called_normal": ratio(eye["normal_called_normal"], eye["normal"]),
        "bscans": scan["n"],
        "bscan_urgent_sensitivity": ratio(scan["urgent_hit"], scan["urgent"]),
        "bscan_normal_specificity": ratio(scan["normal_not_urgent"], scan["normal"]),
    }


def choose(val: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The rule fixed before the run: highest urgent sensitivity, then highest normal
    specificity, then the larger k (more robust to one noisy slice), then the smaller t."""
    rows = [figures(val, k=k, t=t) for k in GRID_K for t in GRID_T]
    return max(rows, key=lambda r: (r["eye_urgent_sensitivity"] or 0, r["eye_normal_specificity"] or 0, r["k"], -r["t"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    root = D.data_dir()
    items = D.read_manifest(root)
    splits = D.split_items(items, D.split_patients(items, seed=SEED))
    model = runtime.get_model(None)
    started = time.perf_counter()
    val = read_split(model, root, [i for i in splits["val"] if i.in_set])
    test = read_split(model, root, [i for i in splits["test"] if i.in_set])
    chosen = choose(val)
    result = {
        "seed": SEED,
        "grid_on_validation": [figures(val, k=k, t=t) for k in GRID_K for t in GRID_T],
        "chosen_on_validation": chosen,
        "test_once": figures(test, k=chosen["k"], t=chosen["t"]),
        "test_single_slice_rule_k1_t0.5": figures(test, k=1, t=0.5),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "grid_on_validation"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
