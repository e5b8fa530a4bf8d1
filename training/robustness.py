"""Robustness suite: the served model under acquisition conditions other clinics bring.

    .venv/bin/python -m training.robustness --model inference/weights/oct-lite0-v1.onnx --json out.json

Runs in the app environment (numpy, Pillow, onnxruntime through ``inference.runtime``;
no PyTorch). Every row applies one deterministic, seeded stress transform to the
*raw* B-scan (before the serving preprocessing, as another device's export would
arrive) and reports, on held-out patients:

- accuracy over the in-set classes,
- NORMAL specificity: the share of NORMAL scans *not* referred urgently (not called
  CNV or DME); its complement is the false urgent referral rate,
- urgent (CNV/DME) sensitivity and the urgent AUC.

The stresses reproduce what issue #13's external hospital showed (Heidelberg device,
another protocol): single-frame speckle (no frame averaging), vertical vessel shadows,
a narrower field of view exported at about 500x280 px, cuts away from the fovea, JPEG
recompression and lower resolution. ``hospital`` combines them.

Each row also measures the "low confidence, needs review" flag (``inference.quality``):
the share of scans flagged, the figures on unflagged and on flagged scans, and how
many errors, false urgent referrals (NORMAL called CNV/DME) and missed urgent scans
the flag catches. ``--calibrate-quality`` first chooses the flag's constants on the
clean row of the validation split (``inference.quality.calibrate``), writes them into
the model's model.json (section ``quality``) and scores every row with them.

The split is the patient-level one of ``training/data.py``. ``--split val`` (the
default) is the one models are chosen on; ``--split test`` is reported once, for the
shipped model, never used to choose. ``--limit`` takes the first N images per class
(the CI's small subset). The model's own leave-one-source-out figures (OCTDL never
trained on) are copied from its model.json into the output when present.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from inference import evaluation as E
from inference import quality as Q
from training import data as D

# Stress transforms: raw greyscale B-scan in, B-scan out.
# Display model of a log-compressed OCT B-scan: grey = 255 * ln(A / A0) / DYN, with
# DYN = 5 nepers (~43 dB) of amplitude dynamic range. Multiplicative amplitude speckle
# s is then additive in grey levels: 255 * ln(s) / DYN.
DYNAMIC_RANGE_NEPERS = 5.0


def speckle(grey: np.ndarray, rng: np.random.Generator, *, looks: float, grain: float = 1.5) -> np.ndarray:
    """Add fully developed speckle of ``looks`` averaged frames (1 = single frame).

    The amplitude speckle of L averaged looks is sqrt(Gamma(L, 1/L)) (Rayleigh for
    L = 1; the std of its log is 0.64 nepers, ~33 grey levels at 5 nepers); it is
    drawn at 1/``grain`` of the resolution and interpolated, as speckle grains span
    a few pixels. Frame-averaged scans (Kermany's Spectralis) already carry their own
    residual speckle; this adds the difference a non-averaged device shows.
    """
    h, w = grey.shape
    gh, gw = max(2, round(h / grain)), max(2, round(w / grain))
    intensity = rng.gamma(shape=looks, scale=1.0 / looks, size=(gh, gw)).astype(np.float32)
    log_s = 0.5 * np.log(np.maximum(intensity, 1e-6))
    log_s -= log_s.mean()  # keep the mean brightness; the preprocessing stretches contrast anyway
    noise = np.asarray(Image.fromarray(log_s.astype(np.float32)).resize((w, h), Image.BILINEAR))
    out = grey.astype(np.float32) + 255.0 * noise / DYNAMIC_RANGE_NEPERS
    return np.clip(out, 0, 255).astype(np.uint8)


def vessel_shadows(
    grey: np.ndarray, rng: np.random.Generator, *, count: tuple[int, int] = (4, 7), depth: tuple[float, float] = (0.45, 0.8)
) -> np.ndarray:
    """Darken a few vertical bands, as retinal vessels shadow every layer below them.

    Widths 0.6-2% of the scan width (4-10 px at 512 px), soft edges, attenuation
    ``depth`` of the signal; the shadow starts near the top of the retina band (the
    vitreous above is dark anyway, so the whole column is attenuated).
    """
    h, w = grey.shape
    gain = np.ones(w, dtype=np.float32)
    x = np.arange(w, dtype=np.float32)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        c = rng.uniform(0.05, 0.95) * w
        half = rng.uniform(0.003, 0.01) * w
        d = rng.uniform(*depth)
        profile = np.clip(1.0 - (np.abs(x - c) - half) / max(1.0, 0.6 * half), 0.0, 1.0)
        gain = np.minimum(gain, 1.0 - d * profile)
    return np.clip(grey.astype(np.float32) * gain[None, :], 0, 255).astype(np.uint8)


def crop_width(grey: np.ndarray, frac: float, centre: float = 0.5) -> np.ndarray:
    """Keep ``frac`` of the width around ``centre`` (a narrower field of view)."""
    w = grey.shape[1]
    cw = max(8, round(frac * w))
    x0 = int(np.clip(round(centre * w - cw / 2), 0, w - cw))
    return grey[:, x0 : x0 + cw]


def resize(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): another export size and aspect ratio."""
    return np.asarray(Image.fromarray(grey).resize(size, Image.BILINEAR))


def rescale(grey: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by ``factor`` and back up: detail lost to a lower resolution."""
    h, w = grey.shape
    small = Image.fromarray(grey).resize((max(8, round(w * factor)), max(8, round(h * factor))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BICUBIC))


def jpeg(grey: np.ndarray, quality: int) -> np.ndarray:
    """Recompress as JPEG at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L"))


def off_fovea(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep 35-45% of the width from one side, away from the centre (no foveal pit)."""
    frac = rng.uniform(0.35, 0.45)
    centre = frac / 2 + 0.02 if rng.random() < 0.5 else 1 - frac / 2 - 0.02
    return crop_width(grey, frac, centre)


def hospital(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The external hospital as the issue describes it, all at once."""
    g = crop_width(grey, rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.6))
    g = resize(g, (500, 280))
    g = speckle(g, rng, looks=1.0)
    g = vessel_shadows(g, rng)
    return jpeg(g, 60)


@dataclass(frozen=True)
class Stress:
    """One row of the suite."""

    name: str
    what: str
    fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    classes: tuple[str, ...] = D.CLASSES  # the classes the row is scored on


STRESSES: tuple[Stress, ...] = (
    Stress("clean", "as stored (reference)", lambda g, r: g),
    Stress("speckle_4", "speckle of 4 averaged frames", lambda g, r: speckle(g, r, looks=4.0)),
    Stress("speckle_1", "single-frame speckle (no averaging)", lambda g, r: speckle(g, r, looks=1.0)),
    Stress("shadows", "4-7 vertical vessel shadows, 45-80% attenuation", vessel_shadows),
    Stress("fov_60", "central 60% of the width (narrower field of view)", lambda g, r: crop_width(g, 0.6)),
    Stress("resize_500x280", "resized to 500x280 px (other export size and aspect)", lambda g, r: resize(g, (500, 280))),
    Stress("fov_60_500x280", "central 60%, then 500x280 px", lambda g, r: resize(crop_width(g, 0.6), (500, 280))),
    Stress("off_fovea", "NORMAL only: 35-45% of the width from one side, no foveal pit", off_fovea, ("NORMAL",)),
    Stress("jpeg_30", "JPEG recompression, quality 30", lambda g, r: jpeg(g, 30)),
    Stress("lowres_40", "downscaled to 40% and back (resolution loss)", lambda g, r: rescale(g, 0.4)),
    Stress("hospital", "all at once: FOV 50-70%, 500x280, single-frame speckle, shadows, JPEG 60", hospital),
)
STRESS_NAMES = tuple(s.name for s in STRESSES)


def rng_for(seed: int, stress: str, path: str) -> np.random.Generator:
    """A generator fixed by (seed, stress, image): every run and every model sees the same pixels."""
    digest = hashlib.sha256(f"{seed}:{stress}:{path}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def apply(stress: Stress, grey: np.ndarray, seed: int, key: str) -> np.ndarray:
    """Apply one stress to a uint8 grey B-scan, deterministically for (seed, stress, key)."""
    return np.ascontiguousarray(stress.fn(grey, rng_for(seed, stress.name, key)), dtype=np.uint8)




def select_items(split: str, limit: int | None = None, root: Path | None = None, seed: int = 20240501) -> list[D.Item]:
    """The in-set images of one patient-level split (training/data.py), optionally N per class."""
    items = D.read_manifest(root)
    splits = D.split_items(items, D.split_patients(items, seed=seed))
    chosen = [i for i in splits[split] if i.in_set]
    if limit:
        chosen = [i for c in D.CLASSES for i in [j for j in chosen if j.label == c][:limit]]
    return chosen


def row_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, NORMAL specificity (not referred urgently), urgent sensitivity and AUC."""
    rep = E.classification_report(probs, y)
    pred = probs.argmax(1)
    urgent = np.isin(y, [D.CLASSES.index("CNV"), D.CLASSES.index("DME")])
    normal = y == D.CLASSES.index("NORMAL")
    called_urgent = np.isin(pred, [D.CLASSES.index("CNV"), D.CLASSES.index("DME")])
    return {
        "n": int(len(y)),
        "accuracy": rep["accuracy"],
        "normal_n": int(normal.sum()),
        "normal_specificity": float((~called_urgent[normal]).mean()) if normal.any() else float("nan"),
        "normal_recall": rep["per_class"]["NORMAL"]["sensitivity"],
        "urgent_n": int(urgent.sum()),
        "urgent_sensitivity": float(called_urgent[urgent].mean()) if urgent.any() else float("nan"),
        "urgent_auc": rep["urgent"]["auc"],
        "ece": rep["ece"],
        "recall": {c: rep["per_class"][c]["sensitivity"] for c in D.CLASSES},
        "confusion_matrix": rep["confusion_matrix"],
    }


def subset_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, NORMAL specificity and urgent sensitivity of a subset (any size, even empty)."""
    urgent_codes = [D.CLASSES.index("CNV"), D.CLASSES.index("DME")]
    urgent = np.isin(y, urgent_codes)
    normal = y == D.CLASSES.index("NORMAL")
    called_urgent = np.isin(pred, urgent_codes)
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "normal_n": int(normal.sum()),
        "normal_specificity": float((~called_urgent[normal]).mean()) if normal.any() else None,
        "urgent_n": int(urgent.sum()),
        "urgent_sensitivity": float(called_urgent[urgent].mean()) if urgent.any() else None,
    }


def quality_metrics(probs: np.ndarray, y: np.ndarray, raws: list[dict[str, float]], cfg: dict[str, Any]) -> dict[str, Any]:
    """The flag on one row: flagged share, figures on unflagged / flagged scans, what it catches."""
    marks = [Q.score(r, cfg, probabilities=p, classes=D.CLASSES) for r, p in zip(raws, probs, strict=True)]
    flagged = np.array([m.flagged for m in marks], dtype=bool)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    urgent_codes = [D.CLASSES.index("CNV"), D.CLASSES.index("DME")]
    wrong = pred != y
    false_urgent = (y == D.CLASSES.index("NORMAL")) & np.isin(pred, urgent_codes)
    missed_urgent = np.isin(y, urgent_codes) & ~np.isin(pred, urgent_codes)
    reasons: dict[str, int] = {}
    for m in marks:
        for k in Q.COMPONENTS:
            if m.flagged and m.components[k] >= float(cfg["reason_at"]):
                reasons[k] = reasons.get(k, 0) + 1
    return {
        "threshold": float(cfg["threshold"]),
        "flagged_rate": float(flagged.mean()) if len(flagged) else None,
        "flagged_n": int(flagged.sum()),
        "unflagged": subset_metrics(pred[~flagged], y[~flagged]),
        "flagged": subset_metrics(pred[flagged], y[flagged]),
        "errors": int(wrong.sum()),
        "errors_flagged": int((wrong & flagged).sum()),
        "false_urgent": int(false_urgent.sum()),
        "false_urgent_flagged": int((false_urgent & flagged).sum()),
        "missed_urgent": int(missed_urgent.sum()),
        "missed_urgent_flagged": int((missed_urgent & flagged).sum()),
        "reasons": reasons,
        "mean_score": float(np.mean([m.score for m in marks])) if marks else None,
    }


def run_suite(
    model: Any | list[Any],
    items: list[D.Item],
    root: Path,
    *,
    seed: int = 0,
    stresses: tuple[Stress, ...] = STRESSES,
    batch: int = 32,
    calibrate_quality: bool = False,
) -> dict[str, Any]:
    """Score ``model`` (an ``inference.runtime.Model``) under every stress.

    A list of models is scored as the mean of their calibrated probabilities per image, each
    model fed its own preprocessing of the same stressed image: what an ensemble graph of them
    computes (``training.ensemble``), measured without composing the graph. Its quality figures
    are then the first model's flag.

    ``calibrate_quality``: choose the flag's constants on the clean row first (its
    scans must be the validation split's) and score every row with them; they are
    left in ``model.quality_cfg``.
    """
    from inference import preprocessing as P

    models = model if isinstance(model, list) else [model]
    if calibrate_quality and len(models) > 1:
        raise ValueError("the quality flag is calibrated for one served model, not a mean of several")
    greys = []
    for it in items:
        with Image.open(root / it.path) as img:
            # The stresses act on the scan, not on a device's white fill around it.
            greys.append(P.remove_fill(P.to_grey(img)))
    labels = np.array([D.CLASSES.index(i.label) for i in items], dtype=np.int64)
    read: dict[str, tuple[np.ndarray, np.ndarray, list[dict[str, float]]]] = {}
    for st in stresses:
        keep = [k for k, it in enumerate(items) if it.label in st.classes]
        images = [Image.fromarray(apply(st, greys[k], seed, items[k].path)) for k in keep]
        each, raws = [], []
        for m in models:
            probs = []
            for b in range(0, len(images), batch):
                for r in m.predict_images(images[b : b + batch]):
                    probs.append([r.probabilities[c] for c in D.CLASSES])
                    if m is models[0]:
                        raws.append(dict(r.quality.raw))
            each.append(np.array(probs, dtype=np.float64).reshape(-1, len(D.CLASSES)))
        read[st.name] = (np.mean(each, axis=0), labels[keep], raws)
    cfg = models[0].quality_cfg
    if calibrate_quality:
        if "clean" not in read:
            raise ValueError("the quality flag is calibrated on the clean row: include it")
        p, _, raws = read["clean"]
        cfg = Q.calibrate(raws, probabilities=list(p), classes=D.CLASSES)
        models[0].quality_cfg = cfg
    rows: dict[str, Any] = {}
    for st in stresses:
        p, y, raws = read[st.name]
        rows[st.name] = {
            "what": st.what,
            "classes": list(st.classes),
            **row_metrics(p, y),
            "quality": quality_metrics(p, y, raws, cfg),
            # Each image's label and prediction (class indices, D.CLASSES order), so that two
            # models' outputs can be paired image by image (--rule paired).
            "true": [int(v) for v in y],
            "pred": [int(v) for v in p.argmax(1)],
        }
    return rows


def write_quality_card(cfg: dict[str, Any], card_path: Path, *, model: Any, split: str, seed: int, limit: int | None) -> None:
    """Write the flag's constants into a model.json as its ``quality`` section."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    section = json.loads(json.dumps(E.json_safe(cfg)))
    section["calibrated_on"] = {
        **section.get("calibrated_on", {}),
        "split": split,
        "stress": "clean",
        "seed": seed,
        "limit": limit,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "command": "python -m training.robustness --calibrate-quality"
        + (f" --limit {limit}" if limit else "")
        + f" --model {card_path.parent / str(card.get('onnx', ''))}",
    }
    card["quality"] = section
    card_path.write_text(json.dumps(card, indent=1), encoding="utf-8")


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{100 * v:.1f}%"


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per stress, the models side by side (name -> suite output)."""
    names = list(results)
    head = "| stress | " + " | ".join(f"{n}: accuracy / NORMAL spec. / urgent sens." for n in names) + " |"
    lines = [head, "|---|" + "---|" * len(names)]
    for st in results[names[0]]["rows"]:
        cells = []
        for n in names:
            r = results[n]["rows"].get(st)
            cells.append("" if r is None else f"{_pct(r['accuracy'])} / {_pct(r['normal_specificity'])} / {_pct(r['urgent_sensitivity'])}")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_quality_table(out: dict[str, Any]) -> str:
    """Markdown table of the flag on one suite output: one row per stress."""
    def cell(m: dict[str, Any]) -> str:
        return f"{m['n']}: {_pct(m['accuracy'])} / {_pct(m['normal_specificity'])} / {_pct(m['urgent_sensitivity'])}"

    lines = [
        "| stress | flagged | unflagged: n: accuracy / NORMAL spec. / urgent sens. | flagged: n: accuracy / NORMAL spec. / urgent sens. "
        "| errors flagged | false urgent flagged | missed urgent flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in out["rows"].items():
        q = row.get("quality")
        if not q:
            continue
        lines.append(
            f"| {name} | {_pct(q['flagged_rate'])} | {cell(q['unflagged'])} | {cell(q['flagged'])} "
            f"| {q['errors_flagged']}/{q['errors']} | {q['false_urgent_flagged']}/{q['false_urgent']} "
            f"| {q['missed_urgent_flagged']}/{q['missed_urgent']} |"
        )
    return "\n".join(lines)


RULES = ("single", "pooled", "paired", "device")


def check_rule(
    cand: dict[str, Any],
    base: dict[str, Any],
    loso_accuracy: float | None,
    rule: str = "single",
    fragile: dict[str, Any] | None = None,
    loso_paired: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[tuple[str, bool, str]]:
    """A shipping rule of docs/training.md, on two validation-split suite outputs (candidate, shipped model).

    ``single``: the rule of the first four candidates (at most one image lost per class and
    per row). ``pooled``: the rule of the fifth and sixth runs (per-row non-inferiority with a
    2-point margin, class recall pooled over the rows). ``paired``: the 1.5.0 rule (margins of
    two paired standard errors from the images on which the two models disagree, better than
    the shipped model by one pooled standard error, and still better than ``fragile``, 1.3.0's
    output, where 1.3.0 is fragile). ``device``: the third 1.5.0 run's rule (the paired rule's
    floors and margins, non-inferior pooled, at most 8 clean errors, and a LOSO OCTDL gain of one
    paired standard error over the shipped recipe's LOSO model trained on the same machine;
    ``loso_paired`` is (labels, candidate predictions, shipped recipe's predictions) from the two
    ``loso_logits.npz``, see ``loso_predictions``). Returns (condition, passed, detail) per condition; the
    candidate ships only if every one passes. Refuses outputs of another split, seed or image set.
    """
    if cand["split"] != "val" or base["split"] != "val":
        raise ValueError("the shipping rule is judged on the validation split only")
    if (cand["seed"], cand["n_images"], cand["limit"]) != (base["seed"], base["n_images"], base["limit"]):
        raise ValueError("the two suite outputs were not run on the same images and seed")
    cr, br = cand["rows"], base["rows"]
    stress = [k for k in br if k != "clean" and k in cr]
    if rule in ("paired", "device"):
        if fragile is None:
            raise ValueError(f"the {rule} rule also compares with 1.3.0's output where 1.3.0 is fragile")
        if rule == "device" and loso_paired is None:
            raise ValueError("the device rule compares the two recipes' LOSO predictions (--loso-logits)")
        out = _rule_paired(cr, br, ["clean", *stress], superior=rule == "paired")
        better_than, who = fragile["rows"], "1.3.0"
    else:
        out = _rule_single(cr, br, stress) if rule == "single" else _rule_pooled(cr, br, ["clean", *stress])
        better_than, who = br, ""
    for k in ("shadows", "off_fovea", "hospital"):
        cv, bv = cr[k]["normal_specificity"], better_than[k]["normal_specificity"]
        out.append((f"{k}: NORMAL specificity strictly higher{' than ' + who if who else ''}", cv > bv, f"{_pct(cv)} vs {_pct(bv)}"))
    cm_, bm_ = (float(np.mean([r[k]["accuracy"] for k in stress])) for r in (cr, better_than))
    out.append((f"mean stress accuracy strictly higher{' than ' + who if who else ''}", cm_ > bm_, f"{_pct(cm_)} vs {_pct(bm_)}"))
    if rule == "device":
        assert loso_paired is not None
        y, pc, pb = loso_paired
        n, d = len(y), int((pc != pb).sum())
        a, b = float((pc == y).mean()), float((pb == y).mean())
        se = paired_margin(d, n, standard_errors=1.0)
        out.append(("LOSO OCTDL accuracy >= shipped recipe's on this machine + 1 SE", a >= b + se - 1e-9,
                    f"{_pct(a)} vs {_pct(b)} over {n} images; {d} differ, one SE {100 * se:.2f} points"))
        loso_accuracy = a
    out.append(("LOSO OCTDL accuracy >= 90%", loso_accuracy is not None and loso_accuracy >= 0.90, _pct(loso_accuracy)))
    return out


def loso_predictions(cand_npz: Path | list[Path], base_npz: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, candidate predictions, shipped recipe's predictions) on OCTDL's in-set images, from
    ``training.train --stage loso`` runs' ``loso_logits.npz``; refuses runs over other images.

    Several candidate runs are an ensemble's members: its prediction is the argmax of the mean of
    their calibrated probabilities, as in ``training.ensemble.ensemble_loso``.
    """
    from training import ensemble as En

    paths = cand_npz if isinstance(cand_npz, list) else [cand_npz]
    with np.load(base_npz) as b:
        y, pb = b["octdl_in_set_y"], b["octdl_in_set"].argmax(1)
    runs = [dict(np.load(p)) for p in paths]
    for p, c in zip(paths, runs):
        if not np.array_equal(c["octdl_in_set_y"], y):
            raise ValueError(f"{p}: not evaluated on the same OCTDL images in the same order as {base_npz}")
    return y, En.mean_calibrated(runs, "octdl_in_set").argmax(1), pb


def _correct(row: dict[str, Any]) -> list[int]:
    cm = row["confusion_matrix"]
    return [cm[i][i] for i in range(len(cm))]


def _clean_floor(cr: dict[str, Any], br: dict[str, Any]) -> tuple[str, bool, str]:
    acc = cr["clean"]["accuracy"]
    return ("clean accuracy >= 96.3%", acc >= 0.963, f"{_pct(acc)} (shipped {_pct(br['clean']['accuracy'])})")


def _floors(c: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(measure, value, n) of NORMAL specificity and urgent sensitivity, where the row has such images."""
    return [(key, c[key], c[n_key]) for key, n_key in (("normal_specificity", "normal_n"), ("urgent_sensitivity", "urgent_n"))
            if c[n_key] and c[key] is not None]


def _row_detail(c: dict[str, Any], fails: list[str]) -> str:
    return "; ".join(fails) or f"accuracy {_pct(c['accuracy'])}, NORMAL spec. {_pct(c['normal_specificity'])}, urgent sens. {_pct(c['urgent_sensitivity'])}"


def _rule_single(cr: dict[str, Any], br: dict[str, Any], stress: list[str]) -> list[tuple[str, bool, str]]:
    c_ok, b_ok = _correct(cr["clean"]), _correct(br["clean"])
    per = [f"{c} {a}/{b}" for c, a, b in zip(D.CLASSES, c_ok, b_ok)]
    out = [_clean_floor(cr, br), ("every class recall at most one image below", all(a >= b - 1 for a, b in zip(c_ok, b_ok)), ", ".join(per))]
    for k in stress:
        c, b = cr[k], br[k]
        fails = []
        if c["accuracy"] < b["accuracy"] - 0.01:
            fails.append(f"accuracy {_pct(c['accuracy'])} < {_pct(b['accuracy'])} - 1")
        for key, cv, n in _floors(c):
            if cv < 0.95:
                fails.append(f"{key} {_pct(cv)} < 95%")
            if cv < b[key] - 1.0 / n - 1e-9:
                fails.append(f"{key} {_pct(cv)} more than one image below {_pct(b[key])}")
        out.append((f"{k}: no worse, >= 95%", not fails, _row_detail(c, fails)))
    return out


def pooled_counts(rows: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Per-class correct / total, urgent caught / total and accuracy, summed over the named rows' confusion matrices."""
    cms = np.sum([np.asarray(rows[k]["confusion_matrix"], dtype=np.int64) for k in names], axis=0)
    urgent = [D.CLASSES.index("CNV"), D.CLASSES.index("DME")]
    return {
        "recall": {c: (int(cms[i, i]), int(cms[i].sum())) for i, c in enumerate(D.CLASSES)},
        "urgent": (int(cms[np.ix_(urgent, urgent)].sum()), int(cms[urgent].sum())),
        "accuracy": float(np.trace(cms) / cms.sum()),
    }


def _rule_pooled(cr: dict[str, Any], br: dict[str, Any], rows: list[str]) -> list[tuple[str, bool, str]]:
    out = [_clean_floor(cr, br)]
    for k in rows:
        c, b = cr[k], br[k]
        fails = [f"{key} {_pct(cv)} < 95%" for key, cv, _ in _floors(c) if cv < 0.95]
        if c["accuracy"] < b["accuracy"] - 0.02 - 1e-9:
            fails.append(f"accuracy {_pct(c['accuracy'])} < {_pct(b['accuracy'])} - 2")
        out.append((f"{k}: >= 95% floors, accuracy >= shipped - 2", not fails, _row_detail(c, fails)))
    pc, pb = pooled_counts(cr, rows), pooled_counts(br, rows)
    for c in D.CLASSES:
        (a, n), (b, m) = pc["recall"][c], pb["recall"][c]
        if not n or not m:
            continue
        out.append((f"pooled {c} recall >= shipped - 2", a / n >= b / m - 0.02 - 1e-9, f"{a}/{n} = {_pct(a / n)} vs {b}/{m} = {_pct(b / m)}"))
    (a, n), (b, m) = pc["urgent"], pb["urgent"]
    out.append(("pooled urgent sensitivity >= shipped - 1", a / n >= b / m - 0.01 - 1e-9, f"{a}/{n} = {_pct(a / n)} vs {b}/{m} = {_pct(b / m)}"))
    return out


def paired_margin(d: int, n: int, standard_errors: float = 2.0) -> float:
    """``standard_errors`` x the standard error of a paired difference of two proportions on n images
    when the two models' predictions differ on d of them: about sqrt(d) / n, with d floored at 1."""
    return standard_errors * float(np.sqrt(max(d, 1))) / n


def _paired_arrays(r: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if "pred" not in r or "true" not in r:
        raise ValueError("the paired rule needs each image's prediction: rerun the suite (its outputs now record them)")
    return np.asarray(r["true"], dtype=np.int64), np.asarray(r["pred"], dtype=np.int64)


def _paired_rows(cr: dict[str, Any], br: dict[str, Any], rows: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, slice]]:
    """(labels, candidate predictions, shipped predictions) concatenated over the rows, and each row's slice."""
    ys, pcs, pbs, where, at = [], [], [], {}, 0
    for k in rows:
        (yc, pc), (yb, pb) = _paired_arrays(cr[k]), _paired_arrays(br[k])
        if not np.array_equal(yc, yb):
            raise ValueError(f"row {k}: the two outputs were not run on the same images in the same order")
        ys.append(yc)
        pcs.append(pc)
        pbs.append(pb)
        where[k] = slice(at, at + len(yc))
        at += len(yc)
    return np.concatenate(ys), np.concatenate(pcs), np.concatenate(pbs), where


def _rule_paired(cr: dict[str, Any], br: dict[str, Any], rows: list[str], superior: bool = True) -> list[tuple[str, bool, str]]:
    """The paired rule's conditions 1-4. ``superior``: pooled accuracy above the shipped model's by one
    standard error and clean errors no more than its (the paired rule); otherwise pooled accuracy
    non-inferior within two standard errors and at most 8 clean errors (the device rule)."""
    y, pc, pb, where = _paired_rows(cr, br, rows)
    out = [_clean_floor(cr, br)]
    for k in rows:
        sl = where[k]
        c, n = cr[k], sl.stop - sl.start
        d = int((pc[sl] != pb[sl]).sum())
        acc_c, acc_b = float((pc[sl] == y[sl]).mean()), float((pb[sl] == y[sl]).mean())
        margin = paired_margin(d, n)
        fails = [f"{key} {_pct(cv)} < 95%" for key, cv, _ in _floors(c) if cv < 0.95]
        if acc_c < acc_b - margin - 1e-9:
            fails.append(f"accuracy {_pct(acc_c)} < {_pct(acc_b)} - {100 * margin:.1f}")
        detail = _row_detail(c, fails) + f" (shipped {_pct(acc_b)}; {d} of {n} predictions differ, margin {100 * margin:.1f} points)"
        out.append((f"{k}: >= 95% floors, accuracy >= shipped - 2 SE", not fails, detail))
    urgent = np.isin(y, [D.CLASSES.index("CNV"), D.CLASSES.index("DME")])
    groups = [(f"pooled {c} recall", y == i, pc == y, pb == y) for i, c in enumerate(D.CLASSES)]
    called_c, called_b = (np.isin(p, [D.CLASSES.index("CNV"), D.CLASSES.index("DME")]) for p in (pc, pb))
    groups.append(("pooled urgent sensitivity", urgent, called_c, called_b))
    for name, mask, ok_c, ok_b in groups:
        n = int(mask.sum())
        if not n:
            continue
        d = int((pc[mask] != pb[mask]).sum())
        a, b = float(ok_c[mask].mean()), float(ok_b[mask].mean())
        margin = paired_margin(d, n)
        out.append((f"{name} >= shipped - 2 SE", a >= b - margin - 1e-9,
                    f"{int(ok_c[mask].sum())}/{n} = {_pct(a)} vs {int(ok_b[mask].sum())}/{n} = {_pct(b)}; {d} differ, margin {100 * margin:.1f} points"))
    d, n = int((pc != pb).sum()), len(y)
    a, b = float((pc == y).mean()), float((pb == y).mean())
    sl = where["clean"]
    errs_c, errs_b = int((pc[sl] != y[sl]).sum()), int((pb[sl] != y[sl]).sum())
    if superior:
        se = paired_margin(d, n, standard_errors=1.0)
        out.append(("pooled accuracy >= shipped + 1 SE", a >= b + se - 1e-9, f"{_pct(a)} vs {_pct(b)} over {n} images; {d} differ, one SE {100 * se:.2f} points"))
        out.append(("clean errors no more than shipped", errs_c <= errs_b, f"{errs_c} vs {errs_b}"))
    else:
        margin = paired_margin(d, n)
        out.append(("pooled accuracy >= shipped - 2 SE", a >= b - margin - 1e-9, f"{_pct(a)} vs {_pct(b)} over {n} images; {d} differ, margin {100 * margin:.2f} points"))
        out.append(("clean errors at most 8", errs_c <= 8, f"{errs_c} (shipped {errs_b})"))
    return out


CARD_HEADING = "## Generalisation: robustness suite and other sources"
QUALITY_HEADING = "### When not to trust it: the low-confidence flag on the suite"
CARD = D.REPO_ROOT / "docs" / "model-card.md"


def kermany_out_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The card's table of the train-without-Kermany runs (``training.train --stage loso-kermany``)."""
    if not runs:
        return []
    rows = []
    for lo in runs:
        rep, dr = lo["kermany_in_set"], lo["kermany_drusen"]
        rec = {c: rep["per_class"][c]["sensitivity"] for c in ("CNV", "DME", "NORMAL")}
        called = ", ".join(f"{c} {n}" for c, n in dr["predicted"].items() if n)
        rows.append(
            f"| {D.recipe_label(lo)} | {rep['n']} | {_pct(rep['accuracy'])} | {_pct(rec['CNV'])} | {_pct(rec['DME'])} | "
            f"{_pct(rec['NORMAL'])} | {_pct(normal_specificity(rep))} | {_pct(rep['urgent']['sensitivity'])} | "
            f"{rep['urgent']['auc']:.4f} | {dr['n']}: {called} | {lo.get('epochs')} |"
        )
    return [
        "",
        "Leave-one-source-out the other way (trained without Kermany, on the training split's OCTDL DME/NORMAL and C8",
        "CNV/NORMAL scans; tested on every Kermany scan; `training.train --stage loso-kermany`, a measurement only).",
        "No other source has DRUSEN, so the figures are over Kermany's CNV, DME and NORMAL scans and its DRUSEN scans",
        "are shown by where they land:",
        "",
        "| recipe (`--augment`, training seed) | scans | accuracy | CNV recall | DME recall | NORMAL recall | NORMAL spec. | urgent sens. | urgent AUC | DRUSEN scans called | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def normal_specificity(rep: dict[str, Any]) -> float:
    """Share of NORMAL scans not called CNV or DME, from a classification report's confusion matrix."""
    classes = rep["classes"]
    row = rep["confusion_matrix"][classes.index("NORMAL")]
    n = sum(row)
    urgent = sum(row[classes.index(c)] for c in ("CNV", "DME"))
    return (n - urgent) / n if n else float("nan")


def card_section(outputs: list[dict[str, Any]], command: str, kermany_out: list[dict[str, Any]] | None = None) -> str:
    """The model card's Generalisation section: suite tables per split, models side by side."""
    lines = [
        CARD_HEADING,
        f"*Written by `{command}` from the suite's JSON outputs; rerun it after the card is regenerated.*",
        "",
        "Seeded stress transforms of the raw B-scans of held-out patients (`training/robustness.py`, described",
        "in docs/training.md), scored through `inference.runtime`. Each cell: accuracy / NORMAL specificity",
        "(NORMAL scans not referred as CNV/DME) / urgent (CNV/DME) sensitivity. The validation split is the one",
        "versions are chosen on; the test split is reported once, never used to choose.",
    ]
    for split in ("val", "test"):
        group = [o for o in outputs if o["split"] == split]
        if not group:
            continue
        n = group[0]["n_images"]
        lines += ["", f"**{'Validation' if split == 'val' else 'Test'} split** ({n} in-set images; `off_fovea`: NORMAL only):", ""]
        lines.append(format_table({f"{o['model']['version']}": o for o in group}))
    losos = [(o["model"]["version"], o["leave_one_source_out"]) for o in outputs if o.get("leave_one_source_out")]
    seen: set[str] = set()
    lo_lines = []
    for version, lo in losos:
        if version in seen:
            continue
        seen.add(version)
        rec = lo["recall"]
        lo_lines.append(f"| {version} | {_pct(lo['accuracy'])} | {_pct(rec['DME'])} | {_pct(rec['NORMAL'])} | {lo['urgent_auc']:.4f} | {lo.get('epochs')} |")
    if lo_lines:
        lines += [
            "",
            "Leave-one-source-out (trained without OCTDL, tested on every OCTDL DME/NORMAL image), from each model's card:",
            "",
            "| recipe of | accuracy | DME recall | NORMAL recall | urgent AUC | epochs |",
            "|---|---|---|---|---|---|",
            *lo_lines,
        ]
    lines += kermany_out_lines(kermany_out or [])
    lines += [
        "",
        "The suite is synthetic: it ranks versions on the conditions it simulates (issue #13's external hospital:",
        "single-frame speckle, vessel shadows, a narrower field of view exported at about 500x280 px, cuts away",
        "from the fovea); it does not replace a validation on that hospital's scans"
        + ("." if kermany_out else ", nor a train-without-Kermany run, which has not been made."),
    ]
    flagged = [o for o in outputs if any("quality" in r for r in o["rows"].values())]
    if flagged:
        lines += [
            "",
            QUALITY_HEADING,
            "",
            "Each reading carries a quality / out-of-distribution score (`inference.quality`: band speckle, band contrast,",
            "foveal pit, the model's top-two margin, the input gate) and is flagged \"Low confidence — needs review\" at or",
            "above the card's threshold, chosen on the clean validation row only (at most 5% of it flagged; rule in",
            "docs/inference.md). Cells: n: accuracy / NORMAL specificity / urgent sensitivity; \"errors flagged\" = wrong",
            "readings among the flagged / all wrong readings of the row; false urgent = NORMAL called CNV/DME; missed",
            "urgent = CNV/DME not called urgent. What the table shows, in words: docs/inference.md.",
        ]
        for o in flagged:
            thr = (o.get("quality") or {}).get("threshold")
            thr_text = f", threshold {thr:.4f}" if isinstance(thr, (int, float)) else ""
            lines += ["", f"**{o['model']['version']}, {'validation' if o['split'] == 'val' else 'test'} split{thr_text}:**", ""]
            lines.append(format_quality_table(o))
    return "\n".join(lines) + "\n"


def write_card_section(section: str, card: Path = CARD) -> None:
    """Insert or replace the Generalisation section of the model card (before "## Out of set")."""
    text = card.read_text(encoding="utf-8")
    if CARD_HEADING in text:
        start = text.index(CARD_HEADING)
        nxt = text.find("\n## ", start + len(CARD_HEADING))
        text = text[:start] + section + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
    else:
        anchor = text.find("\n## Out of set")
        anchor = anchor + 1 if anchor >= 0 else len(text)
        text = text[:anchor] + section + "\n" + text[anchor:]
    card.write_text(text, encoding="utf-8")


def loso_summary(card: dict[str, Any]) -> dict[str, Any] | None:
    """The leave-one-source-out figures the model's card carries (OCTDL never trained on)."""
    loso = (card.get("card") or {}).get("loso") or {}
    rep = loso.get("octdl_in_set")
    if not rep:
        return None
    return {
        "held_out_source": "octdl",
        "n": rep["n"],
        "accuracy": rep["accuracy"],
        "recall": {c: rep["per_class"][c]["sensitivity"] for c in D.CLASSES},
        "urgent_auc": rep["urgent"]["auc"],
        "epochs": loso.get("epochs"),
        "run_of": loso.get("run_of"),
    }


def flip_averaged(model: Any) -> None:
    """Test-time averaging over a horizontal flip, on this model object only: its
    probabilities and OCT score become the mean over the input and its mirror image
    (the heatmap stays the input's). Two runs of the model per image: serving at 2x."""
    run = model.run_arrays

    def averaged(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probs, heat, score = run(batch)
        probs_f, _, score_f = run(np.ascontiguousarray(batch[..., ::-1]))
        return (probs + probs_f) / 2, heat, (score + score_f) / 2

    model.run_arrays = averaged  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="the .onnx file (its model.json beside it, or the shipped card)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--split", choices=("val", "test"), default="val", help="val: for choosing; test: report once, for the shipped model")
    ap.add_argument("--limit", type=int, default=None, help="first N images per class (CI subset)")
    ap.add_argument("--stress", action="append", choices=STRESS_NAMES, help="only these rows (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stress transforms")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument(
        "--write-card",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="write the model card's Generalisation section from these suite outputs (newest model first) and exit",
    )
    ap.add_argument(
        "--check-rule",
        type=Path,
        nargs=2,
        metavar=("CANDIDATE_JSON", "SHIPPED_JSON"),
        help="judge the shipping rule of docs/training.md on two validation-split outputs and exit (0: ship)",
    )
    ap.add_argument("--loso-json", type=Path, help="with --check-rule: the candidate recipe's loso.json")
    ap.add_argument("--rule", choices=RULES, default="single",
                    help="with --check-rule: single (the first four candidates' rule), pooled (the fifth and sixth runs') or "
                    "paired (the 1.5.0 candidate's, with --fragile-json) or device (the third 1.5.0 run's, with --fragile-json and "
                    "--loso-logits); docs/training.md")
    ap.add_argument("--fragile-json", type=Path, help="with --rule paired or device: 1.3.0's validation output (where 1.3.0 is fragile)")
    ap.add_argument("--loso-logits", type=Path, nargs="+", metavar="NPZ",
                    help="with --rule device: the loso_logits.npz of the candidate's LOSO runs (several: an ensemble's members), "
                    "then last the shipped recipe's, all trained on the same machine")
    ap.add_argument("--mean-of", type=Path, nargs="+", metavar="ONNX",
                    help="instead of --model: score the mean of these models' calibrated probabilities per image, each fed its "
                    "own preprocessing (an ensemble of members that frame scans differently; reading only, the flag is the first's)")
    ap.add_argument(
        "--kermany-out",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="with --write-card: loso_kermany.json files of `training.train --stage loso-kermany` runs to tabulate",
    )
    ap.add_argument("--tta", choices=("flip",), default=None,
                    help="evaluation only: average the probabilities over the image and its horizontal flip")
    ap.add_argument(
        "--calibrate-quality",
        action="store_true",
        help="choose the low-confidence flag's constants on the clean validation row, write them into the model's "
        "model.json (section quality) and score every row with them",
    )
    args = ap.parse_args(argv)

    if args.check_rule:
        cand, base = (json.loads(p.read_text()) for p in args.check_rule)
        loso_acc = json.loads(args.loso_json.read_text())["octdl_in_set"]["accuracy"] if args.loso_json else None
        fragile = json.loads(args.fragile_json.read_text()) if args.fragile_json else None
        if args.loso_logits and len(args.loso_logits) < 2:
            ap.error("--loso-logits: the candidate's run(s), then the shipped recipe's")
        loso_paired = loso_predictions(args.loso_logits[:-1], args.loso_logits[-1]) if args.loso_logits else None
        verdict = check_rule(cand, base, loso_acc, args.rule, fragile, loso_paired)
        if args.rule == "pooled":
            rows = [k for k in base["rows"] if k in cand["rows"]]
            print(f"pooled accuracy over {len(rows)} rows: {_pct(pooled_counts(cand['rows'], rows)['accuracy'])} "
                  f"(shipped {_pct(pooled_counts(base['rows'], rows)['accuracy'])}; the tie-break between two passing candidates)")
        for name, ok, detail in verdict:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        ok = all(v for _, v, _ in verdict)
        print("ship" if ok else "do not ship")
        return 0 if ok else 1

    if args.write_card:
        outputs = [json.loads(p.read_text()) for p in args.write_card]
        shown = " ".join(str(p) for p in args.write_card)
        if args.kermany_out:
            shown += " --kermany-out " + " ".join(str(p) for p in args.kermany_out)
        kermany_out = [json.loads(p.read_text()) for p in args.kermany_out]
        write_card_section(card_section(outputs, f"python -m training.robustness --write-card {shown}", kermany_out))
        return 0

    from inference import runtime as R

    t0 = time.time()
    root = D.data_dir()
    if not (root / "MANIFEST.tsv").is_file():
        print(f"real OCT images not found at {root} (set OCT_DATA_DIR to the folder holding MANIFEST.tsv)", file=sys.stderr)
        return 2
    if args.calibrate_quality and args.split != "val":
        print("the quality flag is calibrated on the validation split only", file=sys.stderr)
        return 2
    if args.mean_of:
        if args.model or args.calibrate_quality or args.tta:
            print("--mean-of scores an ensemble's reading: not with --model, --calibrate-quality or --tta", file=sys.stderr)
            return 2
        members = [R.load_model(p, intra_op_threads=args.threads, inter_op_threads=1) for p in args.mean_of]
        model = members[0]
    else:
        model = R.load_model(args.model, intra_op_threads=args.threads, inter_op_threads=1)
        members = [model]
    if args.tta:
        if args.calibrate_quality:
            print("--tta is an evaluation of the model, not of the flag's calibration", file=sys.stderr)
            return 2
        flip_averaged(model)
    items = select_items(args.split, args.limit, root)
    stresses = tuple(s for s in STRESSES if not args.stress or s.name in args.stress or (args.calibrate_quality and s.name == "clean"))
    rows = run_suite(members, items, root, seed=args.seed, stresses=stresses, calibrate_quality=args.calibrate_quality)
    if args.calibrate_quality:
        card_path = model.path.parent / "model.json"
        write_quality_card(model.quality_cfg, card_path, model=model, split=args.split, seed=args.seed, limit=args.limit)
        print(f"quality flag: threshold {model.quality_cfg['threshold']:.4f} written into {card_path}", file=sys.stderr)
    out = {
        "model": (
            {"path": " + ".join(map(str, args.mean_of)), "name": model.name,
             "version": "candidate (mean of " + " and ".join(m.version for m in members) + ")", "sha256": None}
            if args.mean_of else
            {"path": str(args.model or model.path), "name": model.name, "version": model.version, "sha256": model.sha256}
        ),
        **({"members": [{"path": str(p), "version": m.version, "sha256": m.sha256} for p, m in zip(args.mean_of, members)]}
           if args.mean_of else {}),
        "split": args.split,
        "tta": args.tta,
        "limit": args.limit,
        "seed": args.seed,
        "n_images": len(items),
        "rows": rows,
        "quality": {k: v for k, v in E.json_safe(model.quality_cfg).items()},
        # An ensemble measured with --mean-of: its members' LOSO models are read together by
        # training.ensemble --stage loso, not from one card.
        "leave_one_source_out": None if args.mean_of else loso_summary(model.card),
        "wall_s": time.time() - t0,
    }
    print(format_table({f"{out['model']['name']} {out['model']['version']}": out}))
    print()
    print(format_quality_table(out))
    loso = out["leave_one_source_out"]
    if loso:
        print(f"leave-one-source-out (OCTDL never trained on, from model.json): accuracy {_pct(loso['accuracy'])}, urgent AUC {loso['urgent_auc']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(E.json_safe(out), indent=1))
    print(f"{len(items)} {args.split} images x {len(rows)} stresses in {out['wall_s']:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
