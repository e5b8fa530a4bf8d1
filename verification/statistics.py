"""Agreement and accuracy statistics, as pure functions over plain Python values.

No ORM here: the statistics page gathers rows with ``selectors.statistics_rows``
and passes them in, so every formula is unit-tested against hand-computed examples.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from statistics import mean, median
from typing import Any


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], categories: Iterable[Hashable] | None = None) -> float | None:
    """Cohen's kappa of two raters' labels on the same items, in the same order.

    Return None where it is undefined (no items, or chance agreement of 1).
    """
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n == 0:
        return None
    cats = list(categories) if categories is not None else sorted(set(a) | set(b), key=str)
    observed = sum(1 for x, y in zip(a, b) if x == y) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum((ca[c] / n) * (cb[c] / n) for c in cats)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of a subjects x categories table of rating counts.

    Every row must sum to the same number of raters (at least two). Return None
    where it is undefined (no subjects, or expected agreement of 1).
    """
    rows = [list(r) for r in table]
    if not rows:
        return None
    n = sum(rows[0])
    if n < 2 or any(sum(r) != n for r in rows):
        raise ValueError("every subject needs the same number (>= 2) of ratings")
    big_n = len(rows)
    k = len(rows[0])
    p_j = [sum(r[j] for r in rows) / (big_n * n) for j in range(k)]
    p_i = [(sum(x * x for x in r) - n) / (n * (n - 1)) for r in rows]
    p_bar = sum(p_i) / big_n
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1 - p_e)


def confusion_matrix(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Counts[i][j] of items whose truth is labels[i] and prediction labels[j]."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


def accuracy(matrix: Sequence[Sequence[int]]) -> float | None:
    total = sum(sum(r) for r in matrix)
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else None


def sensitivities(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> dict[str, float | None]:
    """Per-class sensitivity (recall): correct / all items truly of that class."""
    out: dict[str, float | None] = {}
    for i, label in enumerate(labels):
        row = sum(matrix[i])
        out[label] = matrix[i][i] / row if row else None
    return out


def agreement_rate(pairs: Iterable[tuple[Hashable, Hashable]]) -> tuple[float | None, int]:
    """Share of (a, b) pairs that agree, and how many pairs there were."""
    items = list(pairs)
    if not items:
        return None, 0
    return sum(1 for a, b in items if a == b) / len(items), len(items)


@dataclass
class Comparison:
    """A labelled classifier-style comparison: predicted vs reference labels."""

    labels: list[str]
    matrix: list[list[int]]
    n: int
    accuracy: float | None
    sensitivity: dict[str, float | None]

    @property
    def cells(self) -> list[dict[str, Any]]:
        """Matrix cells with a 0..1 shade relative to the row total, for a heatmap."""
        out = []
        for i, row in enumerate(self.matrix):
            total = sum(row)
            for j, count in enumerate(row):
                out.append(
                    {
                        "truth": self.labels[i],
                        "predicted": self.labels[j],
                        "count": count,
                        "share": count / total if total else 0.0,
                        "diagonal": i == j,
                    }
                )
        return out

    @property
    def rows(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The heatmap cells grouped per reference label."""
        k = len(self.labels)
        cells = self.cells
        return [(self.labels[i], cells[i * k : (i + 1) * k]) for i in range(k)]


def compare(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Comparison:
    matrix = confusion_matrix(truth, predicted, labels)
    return Comparison(
        labels=list(labels),
        matrix=matrix,
        n=sum(sum(r) for r in matrix),
        accuracy=accuracy(matrix),
        sensitivity=sensitivities(matrix, labels),
    )


@dataclass
class Report:
    """Everything the statistics page shows."""

    labels: list[str]
    pairwise: list[dict[str, Any]] = field(default_factory=list)
    fleiss: float | None = None
    fleiss_subjects: int = 0
    fleiss_raters: int = 0
    grader_agreement: list[dict[str, Any]] = field(default_factory=list)
    model_vs_final: Comparison | None = None
    model_vs_source: Comparison | None = None
    qc_total: int = 0
    qc_excluded: int = 0
    exclusion_reasons: list[tuple[str, int]] = field(default_factory=list)
    time_per_tier: list[dict[str, Any]] = field(default_factory=list)
    stages: list[tuple[str, int]] = field(default_factory=list)

    @property
    def exclusion_rate(self) -> float | None:
        return self.qc_excluded / self.qc_total if self.qc_total else None

    @property
    def reason_bars(self) -> list[dict[str, Any]]:
        """Exclusion reasons with their share of all exclusions (bar widths)."""
        total = self.qc_excluded or 1
        return [{"reason": r, "count": c, "share": c / total} for r, c in self.exclusion_reasons]

    @property
    def time_bars(self) -> list[dict[str, Any]]:
        """Median seconds per tier scaled to the slowest tier (bar widths)."""
        top = max((t["median_s"] or 0 for t in self.time_per_tier), default=0) or 1
        return [{**t, "share": (t["median_s"] or 0) / top} for t in self.time_per_tier]


Tier2 = dict[int, dict[int, str]]  # scan id -> grader id -> tier 2 label


def tier2_labels(grades: Sequence[dict[str, Any]]) -> tuple[Tier2, dict[int, str]]:
    """Current tier 2 labels per scan and grader, and grader names by id."""
    names: dict[int, str] = {}
    tier2: Tier2 = defaultdict(dict)
    for g in grades:
        names[g["grader_id"]] = g["grader__username"]
        if g["tier"] == 2 and g["label"]:
            tier2[g["scan_id"]][g["grader_id"]] = g["label"]
    return tier2, names


def tier2_graders(tier2: Tier2, names: dict[int, str]) -> list[int]:
    """Ids of everyone who graded in tier 2, by name."""
    return sorted({gid for per_scan in tier2.values() for gid in per_scan}, key=lambda gid: names[gid])


def pairwise_kappas(tier2: Tier2, names: dict[int, str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Cohen's kappa and raw agreement of every pair of tier 2 graders, on the scans both graded."""
    out = []
    for x, y in combinations(tier2_graders(tier2, names), 2):
        common = [s for s, per in tier2.items() if x in per and y in per]
        if not common:
            continue
        a = [tier2[s][x] for s in common]
        b = [tier2[s][y] for s in common]
        out.append(
            {
                "a": names[x],
                "b": names[y],
                "n": len(common),
                "kappa": cohen_kappa(a, b, labels),
                "agreement": agreement_rate(zip(a, b))[0],
            }
        )
    return out


def fleiss_of_tier2(tier2: Tier2, labels: Sequence[str]) -> tuple[float | None, int, int]:
    """Fleiss' kappa over the scans with the most common number (>= 2) of tier 2 grades:
    ``(kappa, subjects, raters)``."""
    counts = Counter(len(per) for per in tier2.values() if len(per) >= 2)
    if not counts:
        return None, 0, 0
    raters = counts.most_common(1)[0][0]
    table = [[Counter(per.values())[label] for label in labels] for per in tier2.values() if len(per) == raters]
    return fleiss_kappa(table), len(table), raters


def grader_agreement_with_final(tier2: Tier2, names: dict[int, str], finals: dict[int, str]) -> list[dict[str, Any]]:
    """Each tier 2 grader's agreement with the final labels."""
    out = []
    for gid in tier2_graders(tier2, names):
        pairs = [(per[gid], finals[s]) for s, per in tier2.items() if gid in per and s in finals]
        rate, n = agreement_rate(pairs)
        out.append({"grader": names[gid], "n": n, "agreement": rate})
    return out


def model_comparisons(
    finals: dict[int, str], sources: dict[int, str], predictions: dict[int, str], labels: Sequence[str]
) -> tuple[Comparison | None, Comparison | None]:
    """The model against final labels, and against source labels where nothing is verified yet."""
    verified = [s for s in finals if s in predictions]
    unverified = [s for s in sources if s not in finals and s in predictions]
    vs_final = compare([finals[s] for s in verified], [predictions[s] for s in verified], labels) if verified else None
    vs_source = (
        compare([sources[s] for s in unverified], [predictions[s] for s in unverified], labels) if unverified else None
    )
    return vs_final, vs_source


def quality_control(grades: Sequence[dict[str, Any]]) -> tuple[int, int, list[tuple[str, int]]]:
    """Tier 1 decisions, exclusions and the exclusion reasons, most common first."""
    qc = [g for g in grades if g["tier"] == 1]
    excluded = [g["exclusion_reason"] for g in qc if g["accepted"] is False]
    return len(qc), len(excluded), Counter(excluded).most_common()


def time_per_tier(grades: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and mean grading time per tier, in seconds."""
    out = []
    for tier in (1, 2, 3):
        times = [g["time_taken_ms"] for g in grades if g["tier"] == tier and g["time_taken_ms"] is not None]
        out.append(
            {
                "tier": tier,
                "n": len(times),
                "median_s": median(times) / 1000 if times else None,
                "mean_s": mean(times) / 1000 if times else None,
            }
        )
    return out


def build_report(
    *,
    grades: Sequence[dict[str, Any]],
    reviews: Sequence[dict[str, Any]],
    sources: dict[int, str],
    predictions: dict[int, str],
    labels: Sequence[str],
) -> Report:
    """Compute the statistics page from plain rows.

    ``grades``: current grades with scan_id, tier, grader_id, grader__username, label,
    accepted, exclusion_reason, time_taken_ms. ``reviews``: scan_id, stage, final_label.
    ``sources``/``predictions``: scan id -> label.
    """
    tier2, names = tier2_labels(grades)
    finals = {r["scan_id"]: r["final_label"] for r in reviews if r["final_label"]}
    fleiss, subjects, raters = fleiss_of_tier2(tier2, labels)
    vs_final, vs_source = model_comparisons(finals, sources, predictions, labels)
    qc_total, qc_excluded, reasons = quality_control(grades)
    return Report(
        labels=list(labels),
        pairwise=pairwise_kappas(tier2, names, labels),
        fleiss=fleiss,
        fleiss_subjects=subjects,
        fleiss_raters=raters,
        grader_agreement=grader_agreement_with_final(tier2, names, finals),
        model_vs_final=vs_final,
        model_vs_source=vs_source,
        qc_total=qc_total,
        qc_excluded=qc_excluded,
        exclusion_reasons=reasons,
        time_per_tier=time_per_tier(grades),
        stages=sorted(Counter(r["stage"] for r in reviews).items()),
    )
