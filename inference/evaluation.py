"""Classification metrics for the OCT model (numpy only; shared by training and serving).

Definitions (the model card refers to them):

- *sensitivity* of class c: TP / (TP + FN); *specificity*: TN / (TN + FP), one-vs-rest.
- *urgent referral*: CNV or DME. Score = p_CNV + p_DME (AUC); decision = predicted
  class is CNV or DME (sensitivity / specificity).
- *Kermany weighted error*: mean over the N in-set images of a penalty, 0 when the
  prediction is right, 4 when an urgent (CNV/DME) scan is called NORMAL, 2 when it is
  called DRUSEN, and 1 for every other error (CNV<->DME, DRUSEN/NORMAL called anything
  else). Divided by N, as in Kermany et al., Cell 2018 (Fig. 2 penalty scheme).
- *ECE*: expected calibration error with 15 equal-width confidence bins over the
  top-class probability: sum_b |B|/N * |acc(B) - conf(B)|.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
URGENT: frozenset[str] = frozenset({"CNV", "DME"})


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [N, K]."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Return counts [true, predicted]."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC AUC (Mann-Whitney U with tied ranks); NaN if one class is absent."""
    labels = np.asarray(labels, dtype=bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = 0.5 * (i + j) + 1.0
        i = j + 1
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (false positive rate, true positive rate) over all thresholds."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    lab = labels[order]
    tps = np.concatenate([[0], np.cumsum(lab)])
    fps = np.concatenate([[0], np.cumsum(~lab)])
    return fps / max(1, fps[-1]), tps / max(1, tps[-1])


def calibration_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Return per-bin count, mean confidence and accuracy (equal-width bins)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins so a confidence of exactly 1.0 lands in the last bin.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Return the ECE (see module docstring)."""
    n = len(y_true)
    if n == 0:
        return float("nan")
    return float(
        sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in calibration_bins(probs, y_true, n_bins) if b["count"])
    )


def weighted_error(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str] = CLASSES) -> float:
    """Return Kermany's weighted error (see module docstring)."""
    if len(y_true) == 0:
        return float("nan")
    total = 0.0
    for t, p in zip(y_true, y_pred):
        ct, cp = classes[int(t)], classes[int(p)]
        if ct == cp:
            continue
        if ct in URGENT and cp == "NORMAL":
            total += 4
        elif ct in URGENT and cp == "DRUSEN":
            total += 2
        else:
            total += 1
    return total / len(y_true)


def classification_report(
    probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str] = CLASSES, n_bins: int = 15
) -> dict[str, Any]:
    """Return every in-set metric as a JSON-serialisable dict.

    ``probs`` [N, C] (calibrated) and ``y_true`` [N] class indices.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n_cls = len(classes)
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, n_cls)
    per_class = {}
    for i, c in enumerate(classes):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = cm.sum() - tp - fn - fp
        per_class[c] = {
            "n": int(cm[i].sum()),
            "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
            "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        }
    urgent_idx = [i for i, c in enumerate(classes) if c in URGENT]
    urgent_true = np.isin(y_true, urgent_idx)
    urgent_pred = np.isin(y_pred, urgent_idx)
    urgent_score = probs[:, urgent_idx].sum(axis=1) if len(probs) else np.zeros(0)
    n = len(y_true)
    return {
        "n": int(n),
        "accuracy": float((y_pred == y_true).mean()) if n else float("nan"),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "urgent": {
            "auc": roc_auc(urgent_true, urgent_score),
            "sensitivity": float((urgent_pred & urgent_true).sum() / urgent_true.sum()) if urgent_true.any() else float("nan"),
            "specificity": float((~urgent_pred & ~urgent_true).sum() / (~urgent_true).sum()) if (~urgent_true).any() else float("nan"),
        },
        "weighted_error": weighted_error(y_true, y_pred, classes),
        "ece": expected_calibration_error(probs, y_true, n_bins),
    }


def out_of_set_report(probs: np.ndarray, gate_passed: np.ndarray | None = None, classes: Sequence[str] = CLASSES) -> dict[str, Any]:
    """Return the distribution of predictions for images outside the four classes."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    pred = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    out: dict[str, Any] = {
        "n": int(n),
        "predicted": {c: int((pred == i).sum()) for i, c in enumerate(classes)},
        "mean_confidence": float(probs.max(axis=1).mean()) if n else float("nan"),
        "urgent_fraction": float(np.isin(pred, [i for i, c in enumerate(classes) if c in URGENT]).mean()) if n else float("nan"),
    }
    if gate_passed is not None:
        out["gate_rejected"] = int((~np.asarray(gate_passed, dtype=bool)).sum())
    return out


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf (undefined metrics, e.g. CNV recall on a folder without CNV) by None.

    Strict JSON has no NaN, and database JSON columns refuse it.
    """
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def format_report(name: str, rep: dict[str, Any]) -> str:
    """Render a classification report as plain text for the terminal."""
    classes = rep["classes"]
    lines = [f"== {name}: {rep['n']} images", f"accuracy           {rep['accuracy']:.4f}"]
    lines.append("class      n   sensitivity  specificity")
    for c in classes:
        pc = rep["per_class"][c]
        lines.append(f"{c:<8} {pc['n']:>4}   {pc['sensitivity']:.4f}       {pc['specificity']:.4f}")
    lines.append("confusion matrix (rows true, columns predicted): " + " ".join(classes))
    for c, row in zip(classes, rep["confusion_matrix"]):
        lines.append(f"  {c:<8} " + " ".join(f"{v:>6}" for v in row))
    u = rep["urgent"]
    lines.append(f"urgent referral (CNV|DME): AUC {u['auc']:.4f}  sensitivity {u['sensitivity']:.4f}  specificity {u['specificity']:.4f}")
    lines.append(f"Kermany weighted error {rep['weighted_error']:.4f}")
    lines.append(f"ECE (15 bins)          {rep['ece']:.4f}")
    return "\n".join(lines)
