"""manage.py import_volume PATH... [--case ID] [--eye OD|OS] [--user NAME]"""
from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from cases.models import Case
from intake.formats import volume_source_from_path
from intake.volumes import volume_import
from octportal.errors import DomainError


class Command(BaseCommand):
    help = (
        "Import OCT volumes (DICOM OPT file or series folder, Heyex .vol, Heyex XML export, ZIP of B-scans), "
        "each all or nothing. Without --case, the device's patient id (keyed-hashed) and the acquisition "
        "date choose the patient and examination."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--case", type=int, default=None, help="Examination id to import into.")
        parser.add_argument("--eye", default="", choices=["", "OD", "OS"], help="Eye, for files that do not record it.")
        parser.add_argument("--user", default=None, help="Username recorded as uploader (default: none).")

    def handle(self, *args, **options) -> None:
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user {options['user']!r}.")
        case = None
        if options["case"] is not None:
            case = Case.objects.select_related("patient").filter(pk=options["case"]).first()
            if case is None:
                raise CommandError(f"No examination (case) with id {options['case']}.")
        failed = 0
        for path in options["paths"]:
            try:
                volume = volume_import(source=volume_source_from_path(path), uploaded_by=user, case=case, eye=options["eye"])
            except DomainError as exc:
                failed += 1
                self.stderr.write(f"{path}: refused: {exc.message}")
                continue
            self.stdout.write(
                f"{path}: volume {volume.pk} in case {volume.case_id}: {volume.slice_count} B-scans, "
                f"{volume.laterality}, {volume.get_source_format_display()}"
            )
        if failed:
            raise CommandError(f"{failed} of {len(options['paths'])} volumes refused; nothing of them was stored.")
