"""Celery tasks: thin, take ids only."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="inference.tasks.predict_scan")
def predict_scan(scan_id: int) -> None:
    raise NotImplementedError("predict_scan is being built (issue 4)")
