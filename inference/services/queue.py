"""The analysis queue: request a scan's reading, re-run it, recover stale scans.

Tasks are published by name from Celery's registry (``inference.tasks`` registers
them), so this module does not import the tasks module that calls back into the
services: no import cycle between the two.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cases.models import Scan
from cases.roles import Role, has_role
from octportal.errors import Conflict, Forbidden

from ..models import ModelVersion, Prediction
from .run import batches_of, scan_reading_copy

logger = logging.getLogger(__name__)

# Publishing to a broker that is down must not hold an upload for long: try briefly,
# then leave the scan QUEUED for the sweep.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

MSG_GAVE_UP = "The automated reading did not complete after {n} attempts and was stopped."

ACTIVE_STATUSES = (Scan.Status.QUEUED, Scan.Status.RUNNING)

TASK_PREDICT_SCAN = "inference.tasks.predict_scan"
TASK_PREDICT_BATCH = "inference.tasks.predict_batch"


def _task(name: str) -> Any:
    """The registered Celery task ``name`` (eager or not, as the app is configured)."""
    return current_app.tasks[name]


def _publish(task: Any, *args: Any) -> bool:
    """Send a task; on a broker error log it and return False (the sweep re-enqueues)."""
    try:
        task.apply_async(args=args, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except Exception as exc:  # noqa: BLE001 - any broker failure must not break the caller
        logger.warning(
            "could not enqueue %s for scan ids %s (%s); left queued for the sweep",
            task.name,
            args[0],
            type(exc).__name__,
        )
        return False
    return True


def scan_request_analysis(*, scan: Scan) -> None:
    """Mark a scan queued and enqueue its analysis once the transaction commits.

    If the broker is unreachable the caller still succeeds: the scan stays QUEUED and
    ``sweep_stale_scans`` enqueues it once it is older than OCT_INFERENCE_STALE_AFTER.
    """
    Scan.objects.filter(pk=scan.pk).update(
        status=Scan.Status.QUEUED, status_detail="", status_changed_at=timezone.now()
    )
    scan.status = Scan.Status.QUEUED
    scan.status_detail = ""
    scan_id = scan.pk

    def enqueue() -> None:
        _publish(_task(TASK_PREDICT_SCAN), scan_id)

    transaction.on_commit(enqueue)


def scans_request_analysis(*, scan_ids: Sequence[int]) -> None:
    """Mark many scans queued in one update and, once the transaction commits, enqueue
    their reading as model batches (``predict_batch`` of OCT_INFERENCE_BATCH_SIZE scans).

    For a volume's B-scans: one task per batch instead of one per B-scan, and the slices
    are read together in order. Several workers share the batches of a large volume. A
    broker that is down leaves them QUEUED for the sweep, as for one scan.
    """
    ids = list(dict.fromkeys(int(i) for i in scan_ids))
    if not ids:
        return
    Scan.objects.filter(pk__in=ids).update(status=Scan.Status.QUEUED, status_detail="", status_changed_at=timezone.now())

    _batches_enqueue_on_commit(ids)


def _batches_enqueue_on_commit(ids: list[int]) -> None:
    """After commit, publish ``ids`` as ``predict_batch`` tasks of at most
    ``OCT_INFERENCE_BATCH_SIZE``, in order and of even sizes (``batches_of``)."""

    def enqueue() -> None:
        task = _task(TASK_PREDICT_BATCH)
        for batch in batches_of(ids, settings.OCT_INFERENCE_BATCH_SIZE):
            _publish(task, batch)

    transaction.on_commit(enqueue)


def stale_scans_requeue(*, older_than: timedelta | None = None, limit: int = 5000) -> int:
    """Re-enqueue scans QUEUED or RUNNING for longer than ``older_than``; return how many.

    A scan whose analysis was claimed ``OCT_INFERENCE_MAX_ATTEMPTS`` times without
    finishing (e.g. it kills the worker) is marked FAILED instead of looping forever.
    """
    older_than = settings.OCT_INFERENCE_STALE_AFTER if older_than is None else older_than
    now = timezone.now()
    cutoff = now - older_than
    stale = Q(status__in=ACTIVE_STATUSES, status_changed_at__lt=cutoff)
    max_attempts = settings.OCT_INFERENCE_MAX_ATTEMPTS
    gave_up = Scan.objects.filter(stale, analysis_attempts__gte=max_attempts).update(
        status=Scan.Status.FAILED, status_detail=MSG_GAVE_UP.format(n=max_attempts), status_changed_at=now
    )
    if gave_up:
        logger.warning("stopped analysis of %d scans after %d attempts", gave_up, max_attempts)
    ids = list(
        Scan.objects.filter(stale, analysis_attempts__lt=max_attempts).order_by("id").values_list("id", flat=True)[
            :limit
        ]
    )
    if not ids:
        return 0
    with transaction.atomic():
        Scan.objects.filter(stale, id__in=ids).update(status=Scan.Status.QUEUED, status_changed_at=now)

        _batches_enqueue_on_commit(ids)
    logger.info("re-enqueued %d stale scans", len(ids))
    return len(ids)


def scans_release(*, scan_ids: Iterable[int]) -> None:
    """Put claimed scans back to QUEUED (before a task retries after a transient error)."""
    Scan.objects.filter(id__in=list(scan_ids), status=Scan.Status.RUNNING).update(
        status=Scan.Status.QUEUED, status_changed_at=timezone.now()
    )


def scan_rerun(*, scan: Scan, user: Any) -> Scan:
    """Queue a scan again for the active model version (clinic staff and admins).

    Re-running a scan that the active version already read successfully is refused
    (the result would be identical and the database keeps one prediction per scan and
    version). A failed reading, a gate rejection included, is discarded and redone.
    """
    if not has_role(user, Role.CLINICIAN):
        raise Forbidden("Only clinic staff can re-run the automated reading.")
    with transaction.atomic():
        locked = Scan.objects.select_for_update().get(pk=scan.pk)
        if locked.status in ACTIVE_STATUSES:
            raise Conflict("This scan is already queued for analysis.")
        active = ModelVersion.objects.filter(is_active=True).first()
        if active is not None:
            previous = Prediction.objects.filter(scan=locked, model_version=active).first()
            if previous is not None and previous.gate_passed and locked.status == Scan.Status.ANALYSED:
                raise Conflict(
                    f"This scan has already been read by the active model ({active.label}); "
                    "re-running the same version gives the same result."
                )
            if previous is not None:
                heatmap = previous.heatmap
                previous.delete()
                scan_reading_copy(scan_id=locked.pk)
                if heatmap:
                    transaction.on_commit(lambda: heatmap.storage.delete(heatmap.name))
        scan_request_analysis(scan=locked)
    logger.info("scan id %s re-run requested by user id %s", scan.pk, getattr(user, "pk", None))
    scan.status = locked.status
    scan.status_detail = ""
    return scan
