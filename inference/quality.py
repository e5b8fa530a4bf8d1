"""When not to trust a reading: a per-scan quality / out-of-distribution score.

numpy only, Django-free; :mod:`inference.runtime` calls :func:`assess` on every image
it reads, from what the preprocessing and the graph already produced (the model
input crop, the retina band, the calibrated probabilities, the gate score), so it
costs about a millisecond and no second pass over the image.

Five measured components, each reported as a raw value and as a "badness" in [0, 1]:

``noise``
    speckle in the retina band of the model input: the robust standard deviation of
    horizontal neighbour differences (after flattening the layers run horizontally,
    so these are mostly noise), over the band's contrast in the same crop.
``contrast``
    the band's contrast in the original image (``preprocessing.Band.contrast``);
    lower is worse.
``pit``
    the foveal pit: per column of the flattened crop, the depth of the inner retinal
    surface above the brightest (RPE) row; the pit is the thinnest point of the
    central part with a thicker rim on *both* sides; its relative depth is the raw
    value (lower is worse: a cut away from the fovea, or a pit lost to disease).
``uncertainty``
    the model's own doubt: 1 - (top probability - second probability), from the
    calibrated (temperature-scaled) probabilities.
``gate``
    1 - the input gate's OCT score: how little the image looks like the scans the
    gate was trained on.

A component's badness is its raw value's position between ``typical`` (0) and
``bad`` (1), clipped; both come from the card's ``quality`` section (chosen on the
clean validation split by ``training.robustness --calibrate-quality``, rule in
``CALIBRATION_RULE``; the defaults below are that run's values for oct-lite0 1.5.0,
used only by a card without the section: recalibrate whenever a model is shipped). The score is the noisy-or of
the weighted badnesses, ``1 - prod(1 - w_k b_k)``, in [0, 1]; the reading is flagged
"low confidence, needs review" when the score is at or above ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "COMPONENTS",
    "DEFAULT_QUALITY",
    "Quality",
    "assess",
    "calibrate",
    "measure",
    "quality_config",
    "score",
]

#: The components in report order.
COMPONENTS: tuple[str, ...] = ("noise", "contrast", "pit", "uncertainty", "gate")

#: Used when the card carries no ``quality`` section; the card always wins.
DEFAULT_QUALITY: dict[str, Any] = {
    # oct-lite0 1.5.0's calibration on its clean validation split (model.json), rounded.
    "typical": {"noise": 0.0367, "contrast": 0.580, "pit": 0.392, "uncertainty": 0.0100, "gate": 0.00053},
    "bad": {"noise": 0.129, "contrast": 0.0586, "pit": 0.0, "uncertainty": 0.795, "gate": 0.0102},
    "weights": {"noise": 1.0, "contrast": 1.0, "pit": 0.5, "uncertainty": 1.0, "gate": 1.0},
    "threshold": 0.7602,
    "reason_at": 0.5,
}

#: How the card's constants are chosen (``calibrate``), in words for the card and the docs.
CALIBRATION_RULE = (
    "On the clean validation split only: typical = each component's median; bad = the 99th percentile "
    "(uncertainty), 0 (pit: no pit at all), or the median + 2 x (99th (1st for contrast) percentile - median) "
    "(noise, contrast, gate: the clean 1-in-100 tail scores 0.5); weights 1, pit 0.5 (a pit is legitimately "
    "missing in disease); threshold = the lowest score that flags at most max_flag_rate of those scans."
)

#: A column or band needs this much stretched-intensity contrast to be measured.
_MIN_SIGNAL = 0.05


@dataclass(frozen=True)
class Quality:
    """The quality score of one reading and what it is made of."""

    score: float  # in [0, 1]; higher = less to be trusted
    flagged: bool  # score >= threshold: "low confidence, needs review"
    raw: dict[str, float]  # component -> measured value
    components: dict[str, float]  # component -> badness in [0, 1]
    reasons: tuple[str, ...] = field(default_factory=tuple)  # human phrases, worst first
    threshold: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "flagged": self.flagged,
            "threshold": self.threshold,
            "components": dict(self.components),
            "raw": dict(self.raw),
            "reasons": list(self.reasons),
        }


def quality_config(card: dict[str, Any] | None) -> dict[str, Any]:
    """The quality constants: defaults overlaid by the card's ``quality`` section."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_QUALITY.items()}
    for key, value in ((card or {}).get("quality") or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _box_columns(x: np.ndarray, k: int) -> np.ndarray:
    """Moving average of ``k`` columns (edge padded), float32: k shifted adds, no cumsum."""
    if k <= 1:
        return x
    w = x.shape[1]
    padded = np.concatenate([np.repeat(x[:, :1], k // 2, axis=1), x, np.repeat(x[:, -1:], k - 1 - k // 2, axis=1)], axis=1)
    total = padded[:, 0:w].astype(np.float32, copy=True)
    for i in range(1, k):
        total += padded[:, i : i + w]
    return total / np.float32(k)


def _low_quantile(a: np.ndarray, q: float, axis: int | None = None) -> np.ndarray | float:
    """The order statistic at ``q`` (0..1) along ``axis``: a cheap stand-in for np.percentile."""
    n = a.size if axis is None else a.shape[axis]
    k = min(n - 1, max(0, int(q * (n - 1))))
    if axis is None:
        return float(np.partition(a.ravel(), k)[k])
    return np.take(np.partition(a, k, axis=axis), k, axis=axis)


def _running_median(v: np.ndarray, k: int) -> np.ndarray:
    k = max(1, int(k) | 1)
    if k == 1 or v.size < k:
        return v
    pad = np.concatenate([np.full(k // 2, v[0]), v, np.full(k // 2, v[-1])])
    return np.partition(np.lib.stride_tricks.sliding_window_view(pad, k), k // 2, axis=-1)[:, k // 2]


def band_noise(x: np.ndarray) -> float:
    """Speckle over contrast in the band of a flattened [0, 1] crop (higher = noisier)."""
    profile = x.mean(axis=1)
    bg = float(_low_quantile(profile, 0.1))
    peak = float(profile.max())
    signal = peak - bg
    rows = profile > bg + 0.25 * signal
    if signal < _MIN_SIGNAL or rows.sum() < 2:
        return 1.0
    band = x[rows]
    diffs = np.abs(np.diff(band, axis=1))
    # MAD of a difference of two independent samples: sigma * sqrt(2) * 0.6745.
    sigma = float(_low_quantile(diffs, 0.5)) / (0.6745 * np.sqrt(2.0))
    return sigma / signal


def pit_depth(x: np.ndarray) -> float:
    """Relative depth of the foveal pit in a flattened [0, 1] crop (0 = no pit).

    Per column (smoothed over 1/24 of the width), the inner retinal surface is the
    first row from the top brighter than a third of the way from the column's
    background to its peak; the retina's height there is its distance above the
    crop's brightest row (the flattened RPE). The pit is the lowest height in the
    central 60% of the width; its depth is measured against the lower of the highest
    rims to its left and right, relative to that rim, so a cut with the thickness
    rising to one side only (away from the fovea) has depth 0.
    """
    h, w = x.shape
    if h < 8 or w < 16:
        return 0.0
    sm = _box_columns(x, max(3, w // 24))
    profile = sm.mean(axis=1)
    rpe = int(profile.argmax())
    above = sm[: rpe + 1]
    bg = _low_quantile(above, 0.1, axis=0)
    peak = above.max(axis=0)
    thr = bg + (peak - bg) / 3.0
    bright = above > thr[None, :]
    first = bright.argmax(axis=0).astype(np.float64)
    ok = (peak - bg) >= _MIN_SIGNAL
    if ok.sum() < w // 2:
        return 0.0
    height = np.where(ok, rpe - first, np.nan)
    xs = np.arange(w)
    height = np.interp(xs, xs[ok], height[ok])
    height = _running_median(height, max(3, w // 16))
    lo, hi = int(0.2 * w), int(0.8 * w)
    i = lo + int(height[lo:hi].argmin())
    left = float(height[:i].max()) if i > 0 else 0.0
    right = float(height[i + 1 :].max()) if i + 1 < w else 0.0
    rim = min(left, right)
    if rim <= 1.0:
        return 0.0
    return float(max(0.0, rim - height[i]) / rim)


def uncertainty(probabilities: np.ndarray) -> float:
    """1 - (top - second) calibrated probability: 0 when sure, 1 when split evenly."""
    p = np.sort(np.asarray(probabilities, dtype=np.float64))[::-1]
    return float(1.0 - (p[0] - (p[1] if p.size > 1 else 0.0)))


def measure(x: np.ndarray, *, band_contrast: float, probabilities: np.ndarray, oct_score: float) -> dict[str, float]:
    """The raw value of every component (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    return {
        "noise": band_noise(x),
        "contrast": float(band_contrast),
        "pit": pit_depth(x),
        "uncertainty": uncertainty(probabilities),
        "gate": float(1.0 - oct_score),
    }


def _badness(raw: float, typical: float, bad: float) -> float:
    if bad == typical:
        return 0.0
    return float(np.clip((raw - typical) / (bad - typical), 0.0, 1.0))


def _top_two(probabilities: np.ndarray, classes: tuple[str, ...]) -> tuple[str, str]:
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64))
    second = classes[int(order[1])] if len(order) > 1 else classes[int(order[0])]
    return classes[int(order[0])], second


def _phrase(name: str, probabilities: np.ndarray, classes: tuple[str, ...]) -> str:
    if name == "uncertainty":
        a, b = _top_two(probabilities, classes)
        return f"uncertain between {a} and {b}"
    return {
        "noise": "noisy image",
        "contrast": "low contrast",
        "pit": "no foveal pit",
        "gate": "unlike the scans the model was trained on",
    }[name]


def score(
    raw: dict[str, float], cfg: dict[str, Any], *, probabilities: np.ndarray, classes: tuple[str, ...]
) -> Quality:
    """Combine measured components into a :class:`Quality` with the card's constants."""
    comps = {k: _badness(raw[k], float(cfg["typical"][k]), float(cfg["bad"][k])) for k in COMPONENTS}
    weights = {k: float(cfg["weights"].get(k, 1.0)) for k in COMPONENTS}
    keep = 1.0
    for k in COMPONENTS:
        keep *= 1.0 - min(1.0, weights[k] * comps[k])
    total = float(np.clip(1.0 - keep, 0.0, 1.0))
    threshold = float(cfg["threshold"])
    flagged = total >= threshold
    ranked = sorted((k for k in COMPONENTS if weights[k] > 0), key=lambda k: -weights[k] * comps[k])
    named = [k for k in ranked if comps[k] >= float(cfg["reason_at"])]
    if flagged and not named and ranked:
        named = ranked[:1]
    return Quality(
        score=total,
        flagged=flagged,
        raw={k: float(v) for k, v in raw.items()},
        components=comps,
        reasons=tuple(_phrase(k, probabilities, classes) for k in named),
        threshold=threshold,
    )


def assess(
    x: np.ndarray,
    *,
    band_contrast: float,
    probabilities: np.ndarray,
    oct_score: float,
    classes: tuple[str, ...],
    cfg: dict[str, Any],
) -> Quality:
    """Measure and score one reading; ``x`` is the flattened model input crop in [0, 1]."""
    raw = measure(x, band_contrast=band_contrast, probabilities=probabilities, oct_score=oct_score)
    return score(raw, cfg, probabilities=probabilities, classes=classes)


def calibrate(
    raws: list[dict[str, float]],
    *,
    probabilities: list[np.ndarray],
    classes: tuple[str, ...],
    max_flag_rate: float = 0.05,
    tail_factor: float = 2.0,
    pit_weight: float = 0.5,
) -> dict[str, Any]:
    """Choose the card's ``quality`` constants from clean validation readings (``CALIBRATION_RULE``).

    ``raws``: :func:`measure` of each clean validation scan, ``probabilities`` its
    calibrated probabilities. Never give it test scans: the flag is then measured there.
    """
    if not raws:
        raise ValueError("no readings to calibrate on")
    col = {k: np.array([r[k] for r in raws], dtype=np.float64) for k in COMPONENTS}
    med = {k: float(np.median(v)) for k, v in col.items()}

    def tail(k: str, q: float) -> float:
        return med[k] + tail_factor * (float(np.percentile(col[k], q)) - med[k])

    bad = {
        "noise": tail("noise", 99),
        "contrast": tail("contrast", 1),
        "pit": 0.0,
        "uncertainty": float(np.percentile(col["uncertainty"], 99)),
        "gate": tail("gate", 99),
    }
    cfg: dict[str, Any] = {
        "typical": med,
        "bad": bad,
        "weights": {k: (pit_weight if k == "pit" else 1.0) for k in COMPONENTS},
        "threshold": 1.0,
        "reason_at": float(DEFAULT_QUALITY["reason_at"]),
    }
    scores = np.array([score(r, cfg, probabilities=p, classes=classes).score for r, p in zip(raws, probabilities, strict=True)])
    allowed = [t for t in np.unique(scores) if t > 0 and (scores >= t).mean() <= max_flag_rate]
    # The lowest score whose flag stays within the budget; above every score when none does.
    cfg["threshold"] = float(min(allowed)) if allowed else float(np.nextafter(scores.max(), 2.0))
    cfg["rule"] = CALIBRATION_RULE
    cfg["calibrated_on"] = {
        "n": len(raws),
        "max_flag_rate": max_flag_rate,
        "flagged": int((scores >= cfg["threshold"]).sum()),
        "tail_factor": tail_factor,
    }
    return cfg
