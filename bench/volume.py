"""Volume benchmark: a 49-B-scan DICOM OPT volume from upload bytes to its per-eye reading.

Figures, not a test. In a temporary folder (fresh SQLite database and media, nothing
else touched), on real B-scans of ``OCT_DATA_DIR`` (default ``../shared/oct``) made into
one multi-frame OPT file per transfer syntax:

* read: parse, de-identify and decode (``intake.formats.volume_source_read``);
* submit: register every B-scan with its grey copy, open its review, request its reading,
  in one transaction (``intake.volumes.volume_submit``);
* read the volume: the shipped model over all B-scans (``inference.services.predict_scans``,
  batches of ``OCT_INFERENCE_BATCH_SIZE``), then the per-eye rule.

    .venv/bin/python bench/volume.py [--slices 49] [--repeat 3]

The last line (``KEY ...``) gives the median seconds of each step for the uncompressed file.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=49)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-volume-"))
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "octportal.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "CELERY_BROKER_URL": "",
    })
    import django  # noqa: PLC0415 - settings must be in the environment first

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import transaction  # noqa: PLC0415
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit  # noqa: PLC0415

    from inference.selectors import volume_reading  # noqa: PLC0415
    from inference.services import predict_scans  # noqa: PLC0415
    from intake.formats import volume_source_read  # noqa: PLC0415
    from intake.volumes import volume_submit  # noqa: PLC0415
    from tests.factories import CaseFactory  # noqa: PLC0415
    from tests.intake import dicom_files  # noqa: PLC0415

    import logging  # noqa: PLC0415
    from unittest import mock  # noqa: PLC0415

    from cases.models import Scan  # noqa: PLC0415

    logging.disable(logging.INFO)
    # Queue without running: embedded mode would read each B-scan inside "submit"; the
    # model is timed on its own below, in batches as a worker runs it.
    mock.patch("intake.services.scan_request_analysis",
               lambda *, scan: Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.QUEUED)).start()
    call_command("migrate", verbosity=0)
    root = Path(os.environ.get("OCT_DATA_DIR", REPO.parent / "shared" / "oct"))
    frames = _frames(root, args.slices, dicom_files)
    results: dict[str, dict[str, list[float]]] = {}
    for label, syntax in (("uncompressed", ExplicitVRLittleEndian), ("jpeg-baseline", JPEGBaseline8Bit),
                          ("jpeg2000-lossless", JPEG2000Lossless)):
        data = dicom_files.opt_bytes(frames, transfer_syntax=syntax)
        times: dict[str, list[float]] = {"read": [], "submit": [], "reading": []}
        for _ in range(args.repeat):
            case = CaseFactory()
            t0 = time.perf_counter()
            source = volume_source_read(data, name="bench.dcm")
            t1 = time.perf_counter()
            with transaction.atomic():
                volume = volume_submit(case=case, source=source, uploaded_by=None)
            t2 = time.perf_counter()
            predict_scans(scan_ids=list(volume.scans.order_by("slice_index").values_list("pk", flat=True)))
            eye = volume_reading(volume=volume).reading
            t3 = time.perf_counter()
            times["read"].append(t1 - t0)
            times["submit"].append(t2 - t1)
            times["reading"].append(t3 - t2)
        results[label] = times
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{label:18s} {len(data) / 1e6:6.1f} MB  read {med['read']:.2f} s  submit {med['submit']:.2f} s  "
              f"model + per-eye {med['reading']:.2f} s  ({eye.diagnosis if eye else 'no reading'})")
    u = {k: statistics.median(v) for k, v in results["uncompressed"].items()}
    print(f"KEY slices={args.slices} read_s={u['read']:.2f} submit_s={u['submit']:.2f} reading_s={u['reading']:.2f} "
          f"total_s={sum(u.values()):.2f}")


def _frames(root: Path, count: int, dicom_files) -> list:
    """``count`` real 512x496 B-scans (cycled when fewer), as one volume's frames."""
    frames = dicom_files.real_bscans(root, count=4)
    extra = []
    with (root / "MANIFEST.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["path"].startswith("kermany/") and len(frames) + len(extra) < count:
                with Image.open(root / row["path"]) as img:
                    if img.size == (512, 496):
                        extra.append(np.asarray(img.convert("L")))
    out = frames + extra
    return [out[i % len(out)] for i in range(count)]


if __name__ == "__main__":
    main()
