"""manage.py dicom_receiver [--port N] [--bind ADDR] [--quiet-s S]: the DICOM Storage SCP."""
from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from intake.receiver import Receiver


class Command(BaseCommand):
    help = (
        "Receive OCT volumes over DICOM (C-STORE of Ophthalmic Tomography and Photography) from the calling AE "
        "titles in OCT_DICOM_ALLOWED_AE_TITLES; a series is imported once nothing of it arrived for the quiet period."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.OCT_DICOM_PORT)
        parser.add_argument("--bind", default=settings.OCT_DICOM_BIND, help="Address to listen on (default loopback).")
        parser.add_argument("--ae-title", default=settings.OCT_DICOM_AE_TITLE)
        parser.add_argument("--quiet-s", type=float, default=settings.OCT_DICOM_QUIET_S)
        parser.add_argument("--allow", action="append", default=None, help="Allowed calling AE title (repeatable).")

    def handle(self, *args, **options) -> None:
        allowed = options["allow"] or settings.OCT_DICOM_ALLOWED_AE_TITLES
        try:
            receiver = Receiver(ae_title=options["ae_title"], allowed_calling=allowed, quiet_s=options["quiet_s"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        server = receiver.start(bind=options["bind"], port=options["port"])
        host, port = server.server_address[:2]
        self.stdout.write(f"DICOM receiver {options['ae_title']} on {host}:{port}, accepting {', '.join(allowed)}")
        try:
            while True:
                time.sleep(1.0)
                result = receiver.flush()
                for volume in result.volumes:
                    self.stdout.write(f"volume {volume.pk}: {volume.slice_count} B-scans into case {volume.case_id}")
                for name, reason in result.refused:
                    self.stderr.write(f"{name}: refused: {reason}")
        except KeyboardInterrupt:
            pass
        finally:
            receiver.stop()
            receiver.flush(force=True)
