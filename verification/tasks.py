"""Celery tasks of tiered verification: thin, the selectors do the work."""
from __future__ import annotations

from celery import shared_task

from cases.diagnoses import Diagnosis

from . import selectors


@shared_task(name="verification.tasks.refresh_statistics", time_limit=600, soft_time_limit=540)
def refresh_statistics() -> str:
    """Beat: recompute the statistics report so that no page view waits for it."""
    snapshot = selectors.statistics_snapshot(labels=list(Diagnosis.values), fresh=True)
    return snapshot.computed_at.isoformat()
