"""``manage.py evaluate_model`` on a small folder of real scans, and the metric definitions."""
from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference import evaluation as E
from inference import card as C
from inference import preprocessing as P

ONNX = C.WEIGHTS_DIR / str(C.load_model_json().get("onnx", "oct-lite0-v1.onnx"))


def test_auc_matches_hand_computed_values():
    assert E.roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == 1.0
    assert E.roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == 0.75
    assert E.roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_weighted_error_follows_kermany_penalties():
    # CNV->NORMAL (4), DME->DRUSEN (2), NORMAL->CNV (1), DRUSEN right (0)
    y_true = np.array([0, 1, 3, 2])
    y_pred = np.array([3, 2, 0, 2])
    assert E.weighted_error(y_true, y_pred) == pytest.approx((4 + 2 + 1) / 4)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.array([[1.0, 0, 0, 0]] * 10)
    assert E.expected_calibration_error(probs, np.zeros(10, int)) == 0.0
    probs = np.array([[0.5, 0.5, 0, 0]] * 10)
    y = np.array([0] * 5 + [1] * 5)
    assert E.expected_calibration_error(probs, y) == pytest.approx(0.0)
    assert E.expected_calibration_error(np.array([[0.9, 0.1, 0, 0]] * 4), np.array([1, 1, 1, 1])) == pytest.approx(0.9)


def test_report_has_sensitivity_specificity_and_urgent_figures():
    probs = np.eye(4)[[0, 1, 2, 3, 3]]
    rep = E.classification_report(probs, np.array([0, 1, 2, 3, 0]))
    assert rep["accuracy"] == pytest.approx(0.8)
    assert rep["per_class"]["CNV"]["sensitivity"] == pytest.approx(0.5)
    assert rep["per_class"]["NORMAL"]["specificity"] == pytest.approx(3 / 4)
    assert rep["urgent"]["sensitivity"] == pytest.approx(2 / 3)
    assert rep["confusion_matrix"][0] == [1, 0, 0, 1]


@pytest.mark.skipif(not ONNX.is_file(), reason=f"shipped model {ONNX} is missing (run python -m training.train)")
def test_evaluate_model_command_on_real_images(oct_data, tmp_path):
    # Lower-case folder names: class folders are matched case-insensitively.
    picks = {"cnv": "kermany/CNV", "Dme": "octdl/DME", "DRUSEN": "kermany/DRUSEN", "normal": "kermany/NORMAL", "AMD": "octdl/AMD"}
    for folder, src in picks.items():
        (tmp_path / "data" / folder / "nested").mkdir(parents=True)
        for p in sorted((oct_data / src).iterdir())[:2]:
            shutil.copy(p, tmp_path / "data" / folder / "nested" / p.name)
    preds, js = tmp_path / "preds.csv", tmp_path / "out.json"
    out = io.StringIO()
    call_command("evaluate_model", str(tmp_path / "data"), predictions=str(preds), json=str(js), stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    for needle in ("accuracy", "sensitivity", "specificity", "confusion matrix", "urgent referral", "AUC", "weighted error", "ECE", "images/s", "out-of-set folder AMD"):
        assert needle in text, needle
    with open(preds, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "folder", "predicted", "p_CNV", "p_DME", "p_DRUSEN", "p_NORMAL", "gate"]
    assert len(rows) == 1 + 10
    assert {r[7] for r in rows[1:]} <= {"passed", "rejected"}
    for r in rows[1:]:
        assert sum(float(v) for v in r[3:7]) == pytest.approx(1.0, abs=1e-4)
    result = json.loads(js.read_text())
    assert result["in_set"]["n"] == 8
    assert result["out_of_set"]["AMD"]["n"] == 2
    assert sum(result["out_of_set"]["AMD"]["predicted"].values()) == 2


def test_evaluate_model_refuses_a_missing_folder(tmp_path):
    with pytest.raises(CommandError):
        call_command("evaluate_model", str(tmp_path / "nope"))
