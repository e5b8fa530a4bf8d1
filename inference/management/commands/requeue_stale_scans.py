"""Re-enqueue scans left QUEUED or RUNNING too long (what Celery beat runs every minute).

Useful without beat, e.g. after restarting the embedded default, or from cron.
"""
from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand

from inference.services import stale_scans_requeue


class Command(BaseCommand):
    help = "Re-enqueue scans queued or running longer than OCT_INFERENCE_STALE_AFTER (or --older-than seconds)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=int, default=None, help="seconds (default: the setting)")

    def handle(self, *args, older_than: int | None = None, **options) -> None:
        count = stale_scans_requeue(older_than=None if older_than is None else timedelta(seconds=older_than))
        self.stdout.write(f"re-enqueued {count} scan(s)")
