"""The quality / out-of-distribution score (inference.quality): each component on synthetic
crops, the combination, the flag and its reasons, the calibration rule, the runtime wiring."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from inference import quality as Q

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
SURE = np.array([0.97, 0.01, 0.01, 0.01])


def crop(*, pit: float = 0.0, noise: float = 0.0, one_sided: bool = False, size: int = 192, seed: int = 0) -> np.ndarray:
    """A flattened [0, 1] model-input crop: dark vitreous, the retina (its inner surface at a
    height above the RPE row), the bright flat RPE, a darker choroid.

    ``pit``: relative depth of a central foveal dip of the inner surface; ``one_sided``: the
    retina instead thins steadily from one side to the other (a cut away from the fovea).
    """
    rng = np.random.default_rng(seed)
    x = np.full((size, size), 0.05, np.float32)
    rpe = int(0.6 * size)
    cols = np.arange(size, dtype=np.float64)
    base = 0.25 * size
    if one_sided:
        height = base * (0.5 + 0.5 * cols / size)
    else:
        height = base * (1.0 - pit * np.exp(-(((cols - size / 2) / (0.08 * size)) ** 2)))
    for c in range(size):
        top = int(round(rpe - height[c]))
        x[top:rpe, c] = 0.45
    x[rpe : rpe + 6] = 0.95
    x[rpe + 6 : rpe + 30] = 0.3
    if noise:
        x = x + rng.normal(0.0, noise, x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0)


def cfg() -> dict:
    return Q.quality_config({})


# --- components ---------------------------------------------------------------------------


def test_noise_raises_the_noise_measure_monotonically():
    values = [Q.band_noise(crop(pit=0.5, noise=s)) for s in (0.0, 0.03, 0.08, 0.15)]
    assert values == sorted(values) and values[-1] > 4 * max(values[1], 1e-3)


def test_a_flat_featureless_image_counts_as_all_noise():
    assert Q.band_noise(np.full((64, 64), 0.5, np.float32)) == 1.0


def test_pit_is_found_in_a_foveal_cut_and_not_in_a_flat_or_one_sided_band():
    assert Q.pit_depth(crop(pit=0.5)) == pytest.approx(0.5, abs=0.1)
    assert Q.pit_depth(crop(pit=0.0)) < 0.05
    assert Q.pit_depth(crop(one_sided=True)) < 0.05


def test_pit_survives_moderate_speckle():
    assert Q.pit_depth(crop(pit=0.5, noise=0.05)) > 0.3


def test_uncertainty_is_zero_when_sure_and_one_when_split_evenly():
    assert Q.uncertainty(np.array([1.0, 0, 0, 0])) == pytest.approx(0.0)
    assert Q.uncertainty(np.array([0.5, 0.5, 0, 0])) == pytest.approx(1.0)
    assert Q.uncertainty(np.array([0.6, 0.3, 0.1, 0])) == pytest.approx(0.7)


def test_measure_reports_every_component():
    raw = Q.measure(crop(pit=0.5), band_contrast=0.55, probabilities=SURE, oct_score=0.999)
    assert set(raw) == set(Q.COMPONENTS)
    assert raw["contrast"] == 0.55 and raw["gate"] == pytest.approx(0.001)


# --- the score, the flag and its reasons ----------------------------------------------------


def assess(x, probs=SURE, contrast=0.55, oct_score=0.9999, config=None):
    return Q.assess(x, band_contrast=contrast, probabilities=probs, oct_score=oct_score, classes=CLASSES,
                    cfg=config or cfg())


def test_a_clean_foveal_sure_reading_scores_low_and_is_not_flagged():
    q = assess(crop(pit=0.5, noise=0.02))
    assert 0.0 <= q.score < 0.3 and not q.flagged and q.reasons == ()
    assert set(q.components) == set(Q.COMPONENTS) and all(0.0 <= v <= 1.0 for v in q.components.values())


def test_noise_raises_the_score_and_flags_a_noisy_image():
    clean, noisy = assess(crop(pit=0.5, noise=0.02)), assess(crop(pit=0.5, noise=0.25))
    assert noisy.score > clean.score
    assert noisy.components["noise"] == 1.0 and noisy.flagged
    assert noisy.reasons[0] == "noisy image"


def test_a_missing_pit_alone_does_not_flag_but_adds_to_doubt():
    config = cfg()
    no_pit = assess(crop(one_sided=True), config=config)
    assert no_pit.components["pit"] == 1.0
    assert not no_pit.flagged  # weight 0.5: a pit is legitimately lost in disease
    doubtful = assess(crop(one_sided=True), probs=np.array([0.55, 0.35, 0.05, 0.05]), config=config)
    assert doubtful.flagged and "no foveal pit" in doubtful.reasons


def test_an_uncertain_reading_names_the_two_classes():
    q = assess(crop(pit=0.5), probs=np.array([0.45, 0.44, 0.06, 0.05]))
    assert q.flagged and "uncertain between CNV and DME" in q.reasons


def test_the_flag_follows_the_threshold():
    x = crop(pit=0.5, noise=0.02)
    q = assess(x)
    assert assess(x, config={**cfg(), "threshold": q.score}).flagged
    assert not assess(x, config={**cfg(), "threshold": q.score + 1e-6}).flagged


def test_the_card_section_overrides_the_defaults_key_by_key():
    c = Q.quality_config({"quality": {"threshold": 0.5, "bad": {"noise": 0.2}}})
    assert c["threshold"] == 0.5 and c["bad"]["noise"] == 0.2
    assert c["bad"]["uncertainty"] == Q.DEFAULT_QUALITY["bad"]["uncertainty"]
    assert Q.DEFAULT_QUALITY["bad"]["noise"] != 0.2  # the defaults are not mutated


def test_the_shipped_card_carries_a_quality_section_chosen_on_clean_validation():
    from inference.card import load_model_json

    section = load_model_json().get("quality")
    assert section, "inference/weights/model.json has no quality section (python -m training.robustness --calibrate-quality)"
    assert section["calibrated_on"]["split"] == "val" and section["calibrated_on"]["stress"] == "clean"
    assert section["calibrated_on"]["flagged"] <= section["calibrated_on"]["max_flag_rate"] * section["calibrated_on"]["n"]
    assert 0.0 < section["threshold"] <= 1.0


# --- calibration ---------------------------------------------------------------------------


def test_calibration_flags_at_most_the_budget_of_the_scans_it_is_given():
    rng = np.random.default_rng(1)
    raws, probs = [], []
    for _ in range(200):
        p = rng.dirichlet([8, 0.3, 0.3, 0.3])
        probs.append(p)
        raws.append({"noise": rng.gamma(4, 0.01), "contrast": rng.uniform(0.3, 0.7), "pit": rng.uniform(0, 0.8),
                     "uncertainty": Q.uncertainty(p), "gate": rng.exponential(0.001)})
    c = Q.calibrate(raws, probabilities=probs, classes=CLASSES, max_flag_rate=0.05)
    flagged = [Q.score(r, c, probabilities=p, classes=CLASSES).flagged for r, p in zip(raws, probs)]
    assert 0 < sum(flagged) <= 10 and c["calibrated_on"]["flagged"] == sum(flagged)
    assert c["typical"]["noise"] == pytest.approx(np.median([r["noise"] for r in raws]))
    assert c["weights"]["pit"] == 0.5 and c["bad"]["pit"] == 0.0
    # A scan far noisier than any of them is flagged as noisy.
    loud = {**raws[0], "noise": 10 * max(r["noise"] for r in raws)}
    assert Q.score(loud, c, probabilities=probs[0], classes=CLASSES).flagged


# --- runtime wiring (the real model) -------------------------------------------------------


def _bscan(noise: float, seed: int = 0) -> Image.Image:
    x = crop(pit=0.5, noise=noise, size=256, seed=seed)
    return Image.fromarray((x * 255).astype(np.uint8))


def test_every_reading_of_the_runtime_carries_its_quality(settings):
    from tests.inference.support import real_model_or_skip

    model = real_model_or_skip()
    clean, noisy = model.predict_images([_bscan(0.02), _bscan(0.3)])
    for r in (clean, noisy):
        assert isinstance(r.quality, Q.Quality) and 0.0 <= r.quality.score <= 1.0
        assert set(r.quality.raw) == set(Q.COMPONENTS)
        assert r.quality.raw["uncertainty"] == pytest.approx(Q.uncertainty(np.array(list(r.probabilities.values()))))
    assert noisy.quality.raw["noise"] > clean.quality.raw["noise"]
    assert noisy.quality.score >= clean.quality.score


def test_the_assessment_costs_a_few_milliseconds():
    x = crop(pit=0.5, noise=0.05)
    assess(x)
    t0 = time.process_time()  # CPU time: a busy machine's waiting does not count
    for _ in range(20):
        assess(x)
    assert (time.process_time() - t0) / 20 < 0.02  # generous; about 1 ms of CPU on one core


def test_the_shipped_cards_quality_section_was_calibrated_for_the_shipped_model_file():
    """A newly shipped model (training rewrites model.json) must be recalibrated:
    python -m training.robustness --calibrate-quality --model inference/weights/<file>.onnx"""
    import hashlib

    from inference.card import model_file

    path, card = model_file()
    if not path.is_file():
        pytest.skip(f"the shipped model is not at {path}")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (card.get("quality") or {}).get("calibrated_on", {}).get("model_sha256") == sha
