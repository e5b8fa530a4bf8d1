"""``python manage.py evaluate_model DIR [--predictions FILE.csv] [--json FILE.json]``.

Evaluate the shipped ONNX model on any folder whose sub-folders are named by class
(case-insensitive, images collected recursively). Sub-folders outside the model's
classes (e.g. ``AMD``) are out-of-set: only their prediction distribution is reported.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference import evaluation as E
from inference import runtime as R

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


def collect(root: Path) -> list[tuple[Path, str]]:
    """Return (image path, top-level folder name) for every image under ``root``'s sub-folders."""
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(sub.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                out.append((f, sub.name))
    return out


class Progress:
    """A plain stderr progress bar (no extra dependency)."""

    def __init__(self, total: int, stream: Any = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width = max(total, 1), stream, width
        self.t0 = time.perf_counter()

    def update(self, done: int) -> None:
        frac = done / self.total
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        bar = "#" * int(frac * self.width)
        self.stream.write(f"\r[{bar:<{self.width}}] {done}/{self.total} {rate:5.1f} img/s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class Command(BaseCommand):
    help = "Evaluate the shipped ONNX model on a folder of class-named sub-folders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=Path, help="folder whose sub-folders are class names (CNV, DME, DRUSEN, NORMAL, others = out-of-set)")
        parser.add_argument("--predictions", type=Path, help="write one CSV row per image")
        parser.add_argument("--json", type=Path, help="write all metrics as JSON")
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--model", type=Path, default=None, help="an .onnx file other than the shipped one")
        parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")

    def handle(self, *args: Any, **opts: Any) -> None:
        # call_command() passes keyword options through unparsed: normalise to Path here.
        for key in ("dir", "predictions", "json", "model"):
            if opts.get(key) is not None:
                opts[key] = Path(opts[key])
        root: Path = opts["dir"]
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder")
        files = collect(root)
        if not files:
            raise CommandError(f"no images found in the sub-folders of {root}")
        threads = opts["threads"] or (os.cpu_count() or 1)
        model = R.load_model(opts["model"], intra_op_threads=threads, inter_op_threads=1)
        classes = list(model.classes)
        upper = {c.upper(): c for c in classes}

        rows: list[list[Any]] = []
        probs: list[list[float]] = []
        passed: list[bool] = []
        folders: list[str] = []
        unreadable: list[str] = []
        bar = Progress(len(files))
        t0 = time.perf_counter()
        bs = max(1, opts["batch_size"])
        for i in range(0, len(files), bs):
            chunk = files[i : i + bs]
            images, kept = [], []
            for path, folder in chunk:
                try:
                    images.append(R.decode_image(path.read_bytes()))
                    kept.append((path, folder))
                except R.UnreadableImage:
                    unreadable.append(str(path))
            for (path, folder), r in zip(kept, model.predict_images(images)):
                p = [r.probabilities[c] for c in classes]
                probs.append(p)
                passed.append(r.gate_passed)
                folders.append(folder)
                rows.append([str(path.relative_to(root)), folder, r.predicted, *[f"{v:.6f}" for v in p], "passed" if r.gate_passed else "rejected"])
            bar.update(min(i + bs, len(files)))
        bar.close()
        elapsed = time.perf_counter() - t0
        ips = len(rows) / max(elapsed, 1e-9)

        probs_a = np.array(probs, dtype=np.float64).reshape(-1, len(classes))
        passed_a = np.array(passed, dtype=bool)
        in_set = np.array([f.upper() in upper for f in folders], dtype=bool)
        y = np.array([classes.index(upper[f.upper()]) if f.upper() in upper else -1 for f in folders])
        result: dict[str, Any] = {
            "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
            "dir": str(root),
            "images": len(rows),
            "unreadable": unreadable,
            "images_per_second": ips,
            "gate_rejected": int((~passed_a).sum()),
        }
        out = self.stdout
        out.write(f"model {model.name} {model.version} sha256 {model.sha256[:12]}…  {len(rows)} images, {ips:.1f} images/s")
        if in_set.any():
            rep = E.classification_report(probs_a[in_set], y[in_set], classes)
            rep["gate_rejected"] = int((~passed_a[in_set]).sum())
            result["in_set"] = rep
            out.write(E.format_report("in-set folders (" + ", ".join(sorted({f for f, k in zip(folders, in_set) if k})) + ")", rep))
            out.write(f"gate rejected {rep['gate_rejected']} of {rep['n']} in-set images (counted with their predicted class above)")
        result["out_of_set"] = {}
        for folder in sorted({f for f, k in zip(folders, in_set) if not k}):
            m = np.array([f == folder for f in folders])
            oos = E.out_of_set_report(probs_a[m], passed_a[m], classes)
            result["out_of_set"][folder] = oos
            dist = ", ".join(f"{c} {n} ({100 * n / max(1, oos['n']):.0f}%)" for c, n in oos["predicted"].items())
            out.write(f"== out-of-set folder {folder}: {oos['n']} images; predicted {dist}; mean confidence {oos['mean_confidence']:.3f}; gate rejected {oos['gate_rejected']}")
        if unreadable:
            out.write(f"{len(unreadable)} unreadable file(s) skipped")
        if opts["predictions"]:
            with open(opts["predictions"], "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["path", "folder", "predicted", *[f"p_{c}" for c in classes], "gate"])
                w.writerows(rows)
        if opts["json"]:
            opts["json"].write_text(json.dumps(E.json_safe(result), indent=1, allow_nan=False))
