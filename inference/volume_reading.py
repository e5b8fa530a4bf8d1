"""One reading per eye from the readings of its volume's B-scans (a documented rule).

A volume holds many B-scans, most of them off the centre of a lesion, and the model
reads each on its own. Calling the eye urgent as soon as one slice looks urgent makes
one noisy slice decide; averaging lets many normal off-centre slices hide a lesion
seen clearly on a few. The rule (docs/volumes.md), with ``k`` and ``t`` set on the
validation split (settings ``OCT_EYE_URGENT_MIN_SLICES``, ``OCT_EYE_URGENT_MIN_P``):

* **urgent** when at least ``min(k, n)`` of the ``n`` read slices have an urgent
  probability (CNV + DME, the urgent classes of ``URGENCY_BY_DIAGNOSIS``) of at
  least ``t``; a volume of one slice is read like that slice;
* **diagnosis**: if urgent, the urgent class with the larger summed probability over
  those slices; otherwise DRUSEN if at least ``min(k, n)`` slices have a DRUSEN
  probability of at least ``t``; otherwise NORMAL. Each is "the class of the
  strongest consistent evidence": seen on enough slices, strongest where seen;
* **key slices**: the (up to) three slices with the strongest evidence for the
  diagnosis among those showing it at ``t`` or more (urgent probability for CNV/DME,
  DRUSEN probability for DRUSEN; for NORMAL the three most suspicious, by non-normal
  probability), for the reader to look at first.

Pure functions: no ORM (``inference.selectors.volume_reading`` feeds it).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cases.diagnoses import URGENCY_BY_DIAGNOSIS, Diagnosis, Urgency

URGENT_CLASSES: tuple[str, ...] = tuple(c for c, u in URGENCY_BY_DIAGNOSIS.items() if u == Urgency.URGENT)
KEY_SLICES = 3


@dataclass(frozen=True)
class SliceReading:
    slice_index: int
    probabilities: dict[str, float]

    @property
    def p_urgent(self) -> float:
        return sum(self.probabilities.get(c, 0.0) for c in URGENT_CLASSES)


@dataclass(frozen=True)
class EyeReading:
    diagnosis: str
    urgency: str
    urgent_slices: int  # slices at or above the threshold for urgency
    slices_read: int
    key_slices: list[int] = field(default_factory=list)
    min_slices: int = 0
    min_p: float = 0.0

    @property
    def urgent(self) -> bool:
        return self.urgency == Urgency.URGENT


def eye_reading(slices: Sequence[SliceReading], *, min_slices: int, min_p: float) -> EyeReading | None:
    """Apply the per-eye rule to the read slices of one volume; None when none is read."""
    if not slices:
        return None
    needed = max(1, min(min_slices, len(slices)))
    strong = [s for s in slices if s.p_urgent >= min_p]
    if len(strong) >= needed:
        diagnosis = max(URGENT_CLASSES, key=lambda c: (sum(s.probabilities.get(c, 0.0) for s in strong), c))
    elif sum(1 for s in slices if s.probabilities.get(Diagnosis.DRUSEN, 0.0) >= min_p) >= needed:
        diagnosis = Diagnosis.DRUSEN.value
    else:
        diagnosis = Diagnosis.NORMAL.value

    def weight(s: SliceReading) -> float:
        if diagnosis == Diagnosis.NORMAL:
            return 1.0 - s.probabilities.get(Diagnosis.NORMAL, 0.0)
        if diagnosis in URGENT_CLASSES:
            return s.p_urgent
        return s.probabilities.get(diagnosis, 0.0)

    # A finding's key slices are those that show it (at or above t); NORMAL's are the
    # most suspicious ones, whatever their level.
    candidates = slices if diagnosis == Diagnosis.NORMAL else [s for s in slices if weight(s) >= min_p]
    key = sorted(candidates or slices, key=lambda s: (-weight(s), s.slice_index))[:KEY_SLICES]
    return EyeReading(
        diagnosis=str(diagnosis),
        urgency=str(URGENCY_BY_DIAGNOSIS[Diagnosis(diagnosis)]),
        urgent_slices=len(strong),
        slices_read=len(slices),
        key_slices=sorted(s.slice_index for s in key),
        min_slices=min_slices,
        min_p=min_p,
    )
