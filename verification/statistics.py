"""Agreement and accuracy statistics, as pure functions over plain Python values.

No ORM here. The statistics need only counts: contingency tables of every pair of
tier 2 graders, the patterns of tier 2 labels per scan, confusion counts of the model
against final and source labels, QC decisions, a histogram of grading times. The page
gets them from the database already counted (``selectors.statistics_aggregates``, SQL
GROUP BYs: nothing is loaded per grade), and :func:`aggregate_rows` computes the same
counts from plain rows, so that every formula is unit-tested on hand-computed examples
and the SQL is tested against it.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
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


def comparison_of(matrix: list[list[int]], labels: Sequence[str]) -> Comparison:
    """A Comparison (accuracy, per-class sensitivity) of a confusion matrix."""
    return Comparison(
        labels=list(labels),
        matrix=matrix,
        n=sum(sum(r) for r in matrix),
        accuracy=accuracy(matrix),
        sensitivity=sensitivities(matrix, labels),
    )


def compare(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Comparison:
    return comparison_of(confusion_matrix(truth, predicted, labels), labels)


@dataclass
class Report:
    """Everything the statistics page shows, for one review unit: ``unit`` says what
    is counted, ``"scan"`` (single B-scans) or ``"volume"`` (eyes: a volume of more than
    one B-scan graded as one)."""

    labels: list[str]
    unit: str = "scan"
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


# Grading times are counted in buckets of this many milliseconds (medians to 0.1 s).
TIME_BUCKET_MS = 100


@dataclass
class Aggregates:
    """Everything the report is computed from, already counted."""

    labels: list[str]
    names: dict[int, str] = field(default_factory=dict)  # tier 2 grader id -> user name
    # (grader a, grader b) with a < b -> {(label of a, label of b): scans}
    pair_tables: dict[tuple[int, int], Counter] = field(default_factory=dict)
    # per-scan tier 2 label counts in ``labels`` order -> number of scans
    patterns: Counter = field(default_factory=Counter)
    grader_final: dict[int, tuple[int, int]] = field(default_factory=dict)  # grader -> (agree, n)
    model_final: Counter = field(default_factory=Counter)  # (final label, model) -> scans
    model_source: Counter = field(default_factory=Counter)  # (source label, model) -> unverified scans
    qc: Counter = field(default_factory=Counter)  # (accepted, exclusion reason) -> decisions
    times: dict[int, Counter] = field(default_factory=dict)  # tier -> {bucket: grades}
    time_sums: dict[int, tuple[int, int]] = field(default_factory=dict)  # tier -> (sum ms, n)
    stages: Counter = field(default_factory=Counter)


def aggregate_rows(
    *,
    grades: Sequence[dict[str, Any]],
    reviews: Sequence[dict[str, Any]],
    sources: dict[int, str],
    predictions: dict[int, str],
    labels: Sequence[str],
    key: str = "scan_id",
) -> Aggregates:
    """The aggregates of plain rows (current grades with ``key`` (scan_id, or volume_id
    for volumes), tier, grader_id, grader__username, label, accepted, exclusion_reason,
    time_taken_ms; reviews with ``key``, stage, final_label; unit id -> source label /
    the model's reading). Rows of the other unit (``key`` None) are left out."""
    agg = Aggregates(labels=list(labels))
    grades = [g for g in grades if g[key] is not None]
    reviews = [r for r in reviews if r[key] is not None]
    tier2: dict[int, dict[int, str]] = defaultdict(dict)
    for g in grades:
        if g["tier"] == 2 and g["label"]:
            agg.names[g["grader_id"]] = g["grader__username"]
            tier2[g[key]][g["grader_id"]] = g["label"]
        if g["tier"] == 1:
            agg.qc[(g["accepted"], g["exclusion_reason"] or "")] += 1
        if g["time_taken_ms"] is not None:
            agg.times.setdefault(g["tier"], Counter())[g["time_taken_ms"] // TIME_BUCKET_MS] += 1
            total, n = agg.time_sums.get(g["tier"], (0, 0))
            agg.time_sums[g["tier"]] = (total + g["time_taken_ms"], n + 1)
    for per in tier2.values():
        for a, b in combinations(sorted(per), 2):
            agg.pair_tables.setdefault((a, b), Counter())[(per[a], per[b])] += 1
        counts = Counter(per.values())
        agg.patterns[tuple(counts[label] for label in labels)] += 1
    finals = {r[key]: r["final_label"] for r in reviews if r["final_label"]}
    for scan_id, per in tier2.items():
        if scan_id in finals:
            for gid, label in per.items():
                agree, n = agg.grader_final.get(gid, (0, 0))
                agg.grader_final[gid] = (agree + (label == finals[scan_id]), n + 1)
    for scan_id, final in finals.items():
        if scan_id in predictions:
            agg.model_final[(final, predictions[scan_id])] += 1
    for scan_id, source in sources.items():
        if scan_id not in finals and scan_id in predictions:
            agg.model_source[(source, predictions[scan_id])] += 1
    agg.stages = Counter(r["stage"] for r in reviews)
    return agg


def kappa_from_table(table: Counter, labels: Sequence[str]) -> float | None:
    """Cohen's kappa from a contingency table {(label a, label b): count}."""
    n = sum(table.values())
    if n == 0:
        return None
    observed = sum(c for (a, b), c in table.items() if a == b) / n
    rows, cols = Counter(), Counter()
    for (a, b), c in table.items():
        rows[a] += c
        cols[b] += c
    expected = sum((rows[x] / n) * (cols[x] / n) for x in labels)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_from_patterns(patterns: Counter) -> tuple[float | None, int, int]:
    """Fleiss' kappa over the scans with the most common number (>= 2) of tier 2 grades,
    from {label counts: scans}: ``(kappa, subjects, raters)``."""
    by_raters = Counter()
    for counts, scans in patterns.items():
        if sum(counts) >= 2:
            by_raters[sum(counts)] += scans
    if not by_raters:
        return None, 0, 0
    raters = by_raters.most_common(1)[0][0]
    rows = [(counts, scans) for counts, scans in patterns.items() if sum(counts) == raters]
    subjects = sum(scans for _, scans in rows)
    k = len(rows[0][0])
    p_j = [sum(c[j] * w for c, w in rows) / (subjects * raters) for j in range(k)]
    p_bar = sum((sum(x * x for x in c) - raters) / (raters * (raters - 1)) * w for c, w in rows) / subjects
    p_e = sum(p * p for p in p_j)
    kappa = None if p_e >= 1.0 else (p_bar - p_e) / (1 - p_e)
    return kappa, subjects, raters


def pairwise_kappas(agg: Aggregates) -> list[dict[str, Any]]:
    """Cohen's kappa and raw agreement of every pair of tier 2 graders, on the scans both graded."""
    out = []
    pairs = sorted(agg.pair_tables.items(), key=lambda kv: (agg.names[kv[0][0]], agg.names[kv[0][1]]))
    for (a, b), table in pairs:
        n = sum(table.values())
        x, y = sorted((a, b), key=lambda gid: agg.names[gid])
        out.append(
            {
                "a": agg.names[x],
                "b": agg.names[y],
                "n": n,
                "kappa": kappa_from_table(table, agg.labels),
                "agreement": sum(c for (la, lb), c in table.items() if la == lb) / n,
            }
        )
    return out


def grader_agreement_with_final(agg: Aggregates) -> list[dict[str, Any]]:
    """Each tier 2 grader's agreement with the final labels."""
    graders = sorted({g for pair in agg.pair_tables for g in pair} | set(agg.grader_final), key=lambda g: agg.names[g])
    out = []
    for gid in graders:
        agree, n = agg.grader_final.get(gid, (0, 0))
        out.append({"grader": agg.names[gid], "n": n, "agreement": agree / n if n else None})
    return out


def comparison_from_counts(counts: Counter, labels: Sequence[str]) -> Comparison | None:
    """A confusion matrix from {(reference, predicted): count}; None without any."""
    if not counts:
        return None
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for (truth, predicted), c in counts.items():
        if truth in index and predicted in index:
            matrix[index[truth]][index[predicted]] += c
    return comparison_of(matrix, labels)


def quality_control(agg: Aggregates) -> tuple[int, int, list[tuple[str, int]]]:
    """Tier 1 decisions, exclusions and the exclusion reasons, most common first."""
    excluded = Counter({reason: c for (accepted, reason), c in agg.qc.items() if accepted is False})
    return sum(agg.qc.values()), sum(excluded.values()), excluded.most_common()


def _median_of_buckets(histogram: Counter) -> float:
    """The median grading time in seconds from a histogram of TIME_BUCKET_MS buckets
    (each value taken at its bucket's middle)."""
    n = sum(histogram.values())
    lo_pos, hi_pos = (n + 1) // 2, n // 2 + 1  # 1-based positions of the middle value(s)
    seen, lo, hi = 0, None, None
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        middle_ms = (bucket + 0.5) * TIME_BUCKET_MS
        if lo is None and seen >= lo_pos:
            lo = middle_ms
        if seen >= hi_pos:
            hi = middle_ms
            break
    return (lo + hi) / 2 / 1000


def time_per_tier(agg: Aggregates) -> list[dict[str, Any]]:
    """Median (to TIME_BUCKET_MS) and mean grading time per tier, in seconds."""
    out = []
    for tier in (1, 2, 3):
        total, n = agg.time_sums.get(tier, (0, 0))
        out.append(
            {
                "tier": tier,
                "n": n,
                "median_s": _median_of_buckets(agg.times[tier]) if n else None,
                "mean_s": total / n / 1000 if n else None,
            }
        )
    return out


def build_report(agg: Aggregates, *, unit: str = "scan") -> Report:
    """Compute the statistics page of one review unit from its aggregates."""
    fleiss, subjects, raters = fleiss_from_patterns(agg.patterns)
    qc_total, qc_excluded, reasons = quality_control(agg)
    return Report(
        labels=list(agg.labels),
        unit=unit,
        pairwise=pairwise_kappas(agg),
        fleiss=fleiss,
        fleiss_subjects=subjects,
        fleiss_raters=raters,
        grader_agreement=grader_agreement_with_final(agg),
        model_vs_final=comparison_from_counts(agg.model_final, agg.labels),
        model_vs_source=comparison_from_counts(agg.model_source, agg.labels),
        qc_total=qc_total,
        qc_excluded=qc_excluded,
        exclusion_reasons=reasons,
        time_per_tier=time_per_tier(agg),
        stages=sorted(agg.stages.items()),
    )
