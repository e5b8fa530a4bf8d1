"""Celery tasks: thin, take ids only, idempotent through the services' claim.

``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged only after the
task finished, so a killed worker's message is redelivered. That is safe only
because ``prediction_run`` claims the scan with a conditional update and the
database keeps one prediction per scan and version.
"""
from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
from celery import shared_task
from celery.signals import worker_process_init
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import services

logger = logging.getLogger(__name__)

# Errors worth retrying: the database or broker was briefly unreachable. Model and
# image errors are deterministic; the services turn them into a FAILED scan.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
MAX_RETRIES = 5
BACKOFF_FACTOR_S = 2
BACKOFF_MAX_S = 120

_TIME_LIMIT = settings.CELERY_TASK_TIME_LIMIT
_SOFT_TIME_LIMIT = settings.CELERY_TASK_SOFT_TIME_LIMIT


def retry_countdown(retries: int) -> int:
    """Exponential backoff with full jitter: 0..2, 0..4, 0..8 ... capped at 120 s."""
    return get_exponential_backoff_interval(BACKOFF_FACTOR_S, retries, BACKOFF_MAX_S, full_jitter=True)


def _release_then_retry(task, scan_ids: list[int], exc: BaseException):
    logger.warning(
        "transient %s on scan ids %s; retry %d/%d", type(exc).__name__, scan_ids, task.request.retries + 1, MAX_RETRIES
    )
    try:
        services.scans_release(scan_ids=scan_ids)
    except Exception:  # noqa: BLE001 - database still down: the sweep recovers the scan later
        pass
    return task.retry(exc=exc, countdown=retry_countdown(task.request.retries), max_retries=MAX_RETRIES)


# Both reading tasks: acknowledged after they finish, redelivered if the worker dies.
READING_TASK_OPTIONS = dict(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=_TIME_LIMIT,
    soft_time_limit=_SOFT_TIME_LIMIT,
    max_retries=MAX_RETRIES,
)


@shared_task(name="inference.tasks.predict_scan", **READING_TASK_OPTIONS)
def predict_scan(self, scan_id: int) -> None:
    """Analyse one scan (by id)."""
    try:
        services.prediction_run(scan_id=int(scan_id))
    except TRANSIENT_ERRORS as exc:
        raise _release_then_retry(self, [int(scan_id)], exc) from exc


@shared_task(name="inference.tasks.predict_batch", **READING_TASK_OPTIONS)
def predict_batch(self, scan_ids: list[int]) -> int:
    """Analyse several scans (by id) as model batches; return how many were analysed."""
    ids = [int(i) for i in scan_ids]
    try:
        return services.predict_scans(scan_ids=ids)
    except TRANSIENT_ERRORS as exc:
        raise _release_then_retry(self, ids, exc) from exc


@shared_task(name="inference.tasks.sweep_stale_scans", acks_late=True, time_limit=60, soft_time_limit=50)
def sweep_stale_scans() -> int:
    """Beat: re-enqueue scans queued or running longer than OCT_INFERENCE_STALE_AFTER."""
    return services.stale_scans_requeue()


@worker_process_init.connect
def _load_model_in_worker(**_: object) -> None:
    """Create the ONNX session when a worker process starts, not on its first scan."""
    try:
        services.get_model()
    except Exception:  # noqa: BLE001 - the first task will raise the error where it is visible
        logger.exception("could not load the model at worker start")
