"""Read-side queries of tiered verification, scoped to the user."""
from __future__ import annotations

from typing import Any


def may_see_reference(*, user: Any, scan: Any) -> bool:
    """Whether ``user`` may see a scan's current label and the model's reading.

    Placeholder until the verification rules land: in reading-centre mode a tier 2
    grader must not see them before submitting their own grade.
    """
    return True
