"""Celery task of webhook deliveries: an id in, one attempt, retried with backoff."""
from __future__ import annotations

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from . import webhooks
from .models import Delivery

BACKOFF_FACTOR_S = 5
BACKOFF_MAX_S = 600


@shared_task(
    bind=True, max_retries=webhooks.MAX_ATTEMPTS - 1, time_limit=settings.CELERY_TASK_TIME_LIMIT,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
)
def webhook_deliver(self, delivery_id: int) -> str:
    status = webhooks.delivery_attempt(delivery_id=delivery_id)
    if status == Delivery.Status.PENDING:
        countdown = get_exponential_backoff_interval(BACKOFF_FACTOR_S, self.request.retries, BACKOFF_MAX_S, True)
        raise self.retry(countdown=countdown)
    return status
