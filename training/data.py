"""The OCT manifest, the patient-level split and the in-memory image cache."""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from inference import evaluation as E
from inference import preprocessing as P

CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
REPO_ROOT = Path(__file__).resolve().parent.parent


#: What a run records of its recipe (train_wall.json, loso.json, loso_kermany.json), with the
#: value a run from before the key was recorded had.
RECIPE_KEYS: dict[str, Any] = {"frozen_blocks": 5, "augment": "1.3", "window": "band", "train_seed": 20240501}


def recipe_label(record: dict[str, Any]) -> str:
    """A recorded run's recipe in words, e.g. "robust-strong, full-height window, training seed 1"."""
    r = {key: record.get(key, before) for key, before in RECIPE_KEYS.items()}
    if isinstance(r["window"], list):  # an ensemble whose members frame scans differently
        window = ", windows " + " and ".join(r["window"])
    else:
        window = ", full-height window" if r["window"] == "full" else ""
    return f"{r['augment']}{window}, {seeds_text(r['train_seed'])}"


def seeds_text(seeds: Any) -> str:
    """"training seed 1", or an ensemble's members' "training seeds 1 and 2" (training.ensemble)."""
    if isinstance(seeds, list):
        return f"training seeds {', '.join(map(str, seeds[:-1]))} and {seeds[-1]}"
    return f"training seed {seeds}"


def kermany_out_report(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A train-without-Kermany model's reading of the Kermany scans: the classification report over
    CNV, DME and NORMAL, and where the DRUSEN scans (a class it could not learn) land."""
    drusen = y == CLASSES.index("DRUSEN")
    return {
        "kermany_in_set": E.classification_report(probs[~drusen], y[~drusen]),
        "kermany_drusen": E.out_of_set_report(probs[drusen]),
    }


def data_dir() -> Path:
    """Return the OCT data folder: ``$OCT_DATA_DIR`` or ``../shared/oct`` from the repo root."""
    env = os.environ.get("OCT_DATA_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "oct").resolve()


@dataclass(frozen=True)
class Item:
    """One manifest row."""

    path: str  # relative to the data folder
    label: str  # folder class (AMD included)
    source: str  # kermany | octdl | c8
    patient: str  # "" for c8

    @property
    def in_set(self) -> bool:
        return self.label in CLASSES


def read_manifest(root: Path | None = None) -> list[Item]:
    """Read MANIFEST.tsv; Kermany patient ids are grouped by the number alone."""
    root = root or data_dir()
    items: list[Item] = []
    with open(root / "MANIFEST.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            source = row["path"].split("/", 1)[0]
            pid = row["patient_id"].strip()
            if source == "kermany":
                # "CLASS-PATIENT-N": the number is the patient, whatever the class.
                pid = "K" + pid
            items.append(Item(row["path"], row["class"], source, pid))
    return items


def manifest_sha256(root: Path | None = None) -> str:
    """Return the sha256 of MANIFEST.tsv (recorded in the model card)."""
    root = root or data_dir()
    return hashlib.sha256((root / "MANIFEST.tsv").read_bytes()).hexdigest()


def split_patients(
    items: list[Item], seed: int = 20240501, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
) -> dict[str, str]:
    """Assign every patient of kermany and octdl to train/val/test, stratified by class.

    A patient's stratum is its rarest class (so the scarce DRUSEN/DME patients are
    spread over all three splits); AMD-only OCTDL patients get their own stratum and
    are never trained on anyway. Returns ``{patient_id: split}``.
    """
    counts: dict[str, int] = defaultdict(int)
    classes_of: dict[str, set[str]] = defaultdict(set)
    source_of: dict[str, str] = {}
    for it in items:
        if it.source == "c8":
            continue
        counts[it.label] += 1
        classes_of[it.patient].add(it.label)
        source_of[it.patient] = it.source
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pid, labels in classes_of.items():
        stratum = min(labels, key=lambda c: (counts[c], c))
        strata[(source_of[pid], stratum)].append(pid)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for key in sorted(strata):
        pids = sorted(strata[key])
        rng.shuffle(pids)
        n = len(pids)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        for i, pid in enumerate(pids):
            assignment[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def split_items(items: list[Item], assignment: dict[str, str]) -> dict[str, list[Item]]:
    """Group manifest rows by split; c8 is training only, AMD is never trained on."""
    out: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    for it in items:
        if it.source == "c8":
            out["train"].append(it)
        else:
            out[assignment[it.patient]].append(it)
    return out


@dataclass
class Cached:
    """A decoded scan kept in memory for fast augmentation."""

    item: Item
    grey: np.ndarray  # uint8, fill removed, longest side capped
    band: P.Band


def load_cached(root: Path, item: Item, max_side: int = 1024) -> Cached:
    """Decode one image, downscale it if huge, and locate its band once."""
    img = Image.open(root / item.path)
    img.load()
    if max(img.size) > max_side:
        f = max_side / max(img.size)
        img = img.resize((round(img.width * f), round(img.height * f)), Image.BOX)
    grey = P.remove_fill(P.to_grey(img))
    return Cached(item=item, grey=grey, band=P.find_band(grey))
