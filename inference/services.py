"""Write-side services of automated reading (filled in by the inference work)."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from cases.models import Scan


def scan_request_analysis(*, scan: Scan) -> None:
    """Mark a scan queued and enqueue its analysis once the transaction commits."""
    Scan.objects.filter(pk=scan.pk).update(
        status=Scan.Status.QUEUED, status_detail="", status_changed_at=timezone.now()
    )
    scan.status = Scan.Status.QUEUED

    def enqueue() -> None:
        from .tasks import predict_scan

        predict_scan.delay(scan.pk)

    transaction.on_commit(enqueue)
