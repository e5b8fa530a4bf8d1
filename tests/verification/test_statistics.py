"""Statistics functions against hand-computed textbook examples."""
from __future__ import annotations

from collections import Counter

import pytest

from verification import statistics as st


def test_cohen_kappa_matches_the_textbook_example():
    # Wikipedia "Cohen's kappa": 50 proposals, A and B say yes/yes 20, yes/no 5,
    # no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert st.cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_perfect_and_undefined():
    assert st.cohen_kappa(["CNV", "DME"], ["CNV", "DME"]) == pytest.approx(1.0)
    assert st.cohen_kappa(["CNV", "CNV"], ["CNV", "CNV"]) is None  # chance agreement 1
    assert st.cohen_kappa([], []) is None


def test_cohen_kappa_hand_computed_three_categories():
    # 10 items; observed agreement 6/10; marginals A: CNV 4, DME 3, NORMAL 3;
    # B: CNV 3, DME 4, NORMAL 3 -> p_e = (12 + 12 + 9)/100 = 0.33; kappa = 0.27/0.67.
    a = ["CNV", "CNV", "CNV", "CNV", "DME", "DME", "DME", "NORMAL", "NORMAL", "NORMAL"]
    b = ["CNV", "CNV", "DME", "NORMAL", "DME", "DME", "CNV", "NORMAL", "NORMAL", "DME"]
    assert st.cohen_kappa(a, b) == pytest.approx(0.27 / 0.67)


def test_fleiss_kappa_matches_the_worked_example():
    # Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories;
    # P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert st.fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_of_two_raters_on_hand_computed_table():
    # 4 scans, 2 raters: agree, agree, disagree, agree over categories (CNV, DME).
    # P_i = 1,1,0,1 -> P-bar 0.75; p_j = 5/8, 3/8 -> P_e = 34/64; kappa = (0.75-34/64)/(30/64) = 7/15.
    table = [[2, 0], [0, 2], [1, 1], [2, 0]]
    assert st.fleiss_kappa(table) == pytest.approx(7 / 15)


def test_fleiss_kappa_needs_equal_rater_counts():
    with pytest.raises(ValueError):
        st.fleiss_kappa([[2, 0], [1, 0]])


def test_confusion_matrix_accuracy_and_sensitivity():
    labels = ["CNV", "DME", "NORMAL"]
    truth = ["CNV", "CNV", "DME", "NORMAL", "NORMAL"]
    pred = ["CNV", "DME", "DME", "NORMAL", "CNV"]
    cmp = st.compare(truth, pred, labels)
    assert cmp.matrix == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert cmp.accuracy == pytest.approx(3 / 5)
    assert cmp.sensitivity == {"CNV": 0.5, "DME": 1.0, "NORMAL": 0.5}
    assert len(cmp.cells) == 9


def test_build_report_from_plain_rows():
    def g(scan, tier, gid, label="", accepted=None, reason="", ms=1000):
        return {
            "scan_id": scan, "tier": tier, "grader_id": gid, "grader__username": f"u{gid}",
            "label": label, "accepted": accepted, "exclusion_reason": reason, "time_taken_ms": ms,
        }

    grades = [
        g(1, 1, 9, accepted=True), g(2, 1, 9, accepted=True), g(3, 1, 9, accepted=False, reason="severe_artifact"),
        g(1, 2, 1, "CNV"), g(1, 2, 2, "CNV"), g(2, 2, 1, "DME", ms=3000), g(2, 2, 2, "NORMAL"),
        g(1, 3, 5, "CNV"), g(2, 3, 5, "DME"),
    ]
    reviews = [
        {"scan_id": 1, "stage": "verified", "final_label": "CNV"},
        {"scan_id": 2, "stage": "verified", "final_label": "DME"},
        {"scan_id": 3, "stage": "excluded", "final_label": ""},
    ]
    report = st.build_report(st.aggregate_rows(
        grades=grades, reviews=reviews, sources={4: "NORMAL"}, predictions={1: "CNV", 2: "CNV", 4: "NORMAL"},
        labels=["CNV", "DME", "DRUSEN", "NORMAL"],
    ))
    assert report.pairwise[0]["n"] == 2 and report.pairwise[0]["agreement"] == 0.5
    assert report.fleiss_subjects == 2 and report.fleiss_raters == 2
    assert {r["grader"]: r["agreement"] for r in report.grader_agreement} == {"u1": 1.0, "u2": 0.5}
    assert report.model_vs_final.accuracy == 0.5
    assert report.model_vs_source.n == 1 and report.model_vs_source.accuracy == 1.0
    assert report.exclusion_rate == pytest.approx(1 / 3)
    assert report.exclusion_reasons == [("severe_artifact", 1)]
    assert report.time_per_tier[1]["n"] == 4
    # Tier 2 times 1000, 1000, 3000, 1000 ms: median 1.0 s (to the 0.1 s bucket), mean 1.5 s.
    assert report.time_per_tier[1]["median_s"] == pytest.approx(1.05)
    assert report.time_per_tier[1]["mean_s"] == pytest.approx(1.5)


def test_fleiss_from_patterns_equals_fleiss_of_the_expanded_table():
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    patterns = Counter(tuple(r) for r in table)
    kappa, subjects, raters = st.fleiss_from_patterns(patterns)
    assert (subjects, raters) == (10, 14)
    assert kappa == pytest.approx(st.fleiss_kappa(table))


def test_kappa_from_table_equals_cohen_kappa_of_the_pairs():
    a = ["CNV", "CNV", "DME", "NORMAL", "NORMAL", "DRUSEN"]
    b = ["CNV", "DME", "DME", "NORMAL", "DRUSEN", "DRUSEN"]
    labels = ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert st.kappa_from_table(Counter(zip(a, b)), labels) == pytest.approx(st.cohen_kappa(a, b, labels))
