"""manage.py import_dataset DIR [--limit N] [--no-inference] [--user NAME]"""
from __future__ import annotations

import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from octportal.errors import DomainError

from intake.importer import ImportResult, dataset_import


class Command(BaseCommand):
    help = (
        "Import a labelled OCT folder ([train|test|val/]CLASS/CLASS-PATIENT-N.jpeg): patients, cases, "
        "scans with the folder's label as source label, bulk inference. Safe to re-run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--limit", type=int, default=None, help="Import at most N files, balanced across classes.")
        parser.add_argument(
            "--no-inference",
            action="store_true",
            help="Skip the bulk analysis; the scans stay queued for the Celery workers like any upload.",
        )
        parser.add_argument("--user", default=None, help="Username recorded as uploader (default: none).")
        parser.add_argument("--batch-size", type=int, default=32)

    def handle(self, *args, **options) -> None:
        user = None
        if options["user"]:
            try:
                user = get_user_model().objects.get(username=options["user"])
            except get_user_model().DoesNotExist as exc:
                raise CommandError(f"No user {options['user']!r}.") from exc
        started = time.monotonic()
        try:
            result = dataset_import(
                root=options["directory"],
                uploaded_by=user,
                limit=options["limit"],
                run_inference=not options["no_inference"],
                batch_size=max(1, options["batch_size"]),
                progress=self._progress,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write("")
        for name, why in result.rejected[:20]:
            self.stderr.write(f"rejected {name}: {why}")
        self.stdout.write(
            f"{result.seen} files: {result.created} imported, {result.skipped_existing} already present, "
            f"{len(result.rejected)} rejected, {result.unsupported} in unknown classes; "
            f"{result.analysed} analysed in bulk; {time.monotonic() - started:.1f} s"
        )

    def _progress(self, done: int, total: int, result: ImportResult) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "." * (width - filled)
        self.stderr.write(
            f"\r[{bar}] {done}/{total} new {result.created} skipped {result.skipped_existing}", ending=""
        )
        self.stderr.flush()
