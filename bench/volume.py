"""Volume benchmark: a DICOM OPT volume from its last byte to its per-eye reading.

Figures, not a test. In a temporary folder (fresh SQLite database and media, nothing
else touched), on real B-scans of ``OCT_DATA_DIR`` (default ``../shared/oct``) made into
one multi-frame OPT file per transfer syntax:

* read: parse, de-identify and decode (``intake.formats.volume_source_read``);
* submit: register every B-scan with its grey copy, open the volume's review (one for all
  its B-scans), request the readings, in one transaction (``intake.volumes.volume_submit``);
  the tasks are not published (the scans stay QUEUED) because the model is timed on its
  own below, as a worker runs it;
* reading: the shipped model over all B-scans (``inference.services.predict_scans``,
  batches of ``OCT_INFERENCE_BATCH_SIZE``), then the per-eye rule.

The same B-scans uploaded one at a time (``--singles`` of them, each file as it is in the
data set through ``scan_submit``, then read alone as ``predict_scan`` reads a lone
upload) give the per-B-scan baseline a volume is compared with.

    .venv/bin/python bench/volume.py [--slices 49] [--repeat 5] [--singles 12] [--syntax all]
    .venv/bin/python bench/volume.py --profile var/volume.prof      # cProfile of one uncompressed volume
    .venv/bin/python bench/volume.py --rss [--rss-slices 97]        # peak RSS, 1536-wide B-scans

The last line (``KEY ...``) gives p50 and p95 of the uncompressed volume's total, its CPU
seconds (the process's, all threads: on a shared machine the wall time also counts the
waits for a core), the single-upload time of as many B-scans and the ratios.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _setup() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-volume-"))
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "octportal.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "CELERY_BROKER_URL": "",
    })
    import django  # noqa: PLC0415 - settings must be in the environment first

    django.setup()
    import logging  # noqa: PLC0415
    from unittest import mock  # noqa: PLC0415

    from django.core.management import call_command  # noqa: PLC0415

    logging.disable(logging.INFO)
    # Requested, not run: the scans stay QUEUED, as with a broker, and the model is timed
    # separately, in batches as a worker reads them.
    mock.patch("inference.services.queue._publish", lambda task, *args: True).start()
    call_command("migrate", verbosity=0)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=49)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--singles", type=int, default=12, help="lone uploads timed for the per-B-scan baseline")
    ap.add_argument("--syntax", default="all", choices=["all", "uncompressed", "jpeg-baseline", "jpeg2000-lossless",
                                                         "jpeg-ls-lossless"])
    ap.add_argument("--profile", type=Path, help="write a cProfile of one uncompressed volume here and print its top; "
                                                 "frames are encoded as PNG on one thread "
                                                 "(OCT_VOLUME_ENCODE_THREADS=1): cProfile sees only the thread "
                                                 "it runs in")
    ap.add_argument("--rss", action="store_true", help="peak RSS of one process reading, submitting and reading a "
                                                      "volume of --rss-slices 1536-wide B-scans (a child process)")
    ap.add_argument("--rss-slices", type=int, default=97)
    ap.add_argument("--rss-make", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--readings-out", type=Path, help="write every B-scan's reading (probabilities, class, gate, "
                                                      "scores) of one uncompressed volume and of the lone uploads "
                                                      "here as JSON, to compare two checkouts' model outputs")
    ap.add_argument("--files-out", type=Path, help="write the uncompressed OPT file of --slices B-scans (volume.dcm) "
                                                   "and their files as in the data set (single-NNN.jpeg) here, for "
                                                   "bench/e2e.py --volume")
    args = ap.parse_args()
    root = Path(os.environ.get("OCT_DATA_DIR", REPO.parent / "shared" / "oct"))
    if args.rss:
        _rss(args, root)
        return
    if args.profile:
        # cProfile follows only the calling thread: on the encode pool's threads the frames'
        # PNG encoding would be missing from the profile ("frames encoded as PNG" ~0).
        os.environ["OCT_VOLUME_ENCODE_THREADS"] = "1"
    _setup()
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless  # noqa: PLC0415

    from inference.services import get_model  # noqa: PLC0415
    from tests.intake import dicom_files  # noqa: PLC0415

    if args.rss_make:
        _rss_make(args, root, dicom_files)
        return
    if args.rss_child:
        _rss_child(args)
        return
    if args.files_out:
        frames, files = _frames(root, args.slices, size=(512, 496))
        args.files_out.mkdir(parents=True, exist_ok=True)
        (args.files_out / "volume.dcm").write_bytes(dicom_files.opt_bytes(frames))
        for index, data in enumerate(files):
            (args.files_out / f"single-{index:03d}.jpeg").write_bytes(data)
        return
    get_model()  # a worker loads it at start (worker_process_init)
    frames, files = _frames(root, args.slices, size=(512, 496))
    if args.profile:
        _profile(args.profile, dicom_files.opt_bytes(frames))
        return
    if args.readings_out:
        _readings_out(args.readings_out, dicom_files.opt_bytes(frames), files[: args.singles])
        return
    syntaxes = {"uncompressed": ExplicitVRLittleEndian, "jpeg-baseline": JPEGBaseline8Bit,
                "jpeg2000-lossless": JPEG2000Lossless, "jpeg-ls-lossless": JPEGLSLossless}
    if args.syntax != "all":
        syntaxes = {args.syntax: syntaxes[args.syntax]}
    totals: list[float] = []
    cpu: list[float] = []
    for label, syntax in syntaxes.items():
        try:
            data = dicom_files.opt_bytes(frames, transfer_syntax=syntax)
        except Exception as exc:  # noqa: BLE001 - an encoder missing here: say so, go on
            print(f"{label:18s} skipped: {exc}")
            continue
        times: dict[str, list[float]] = {"read": [], "submit": [], "reading": [], "total": [], "cpu": []}
        eye = None
        for _ in range(args.repeat):
            step, eye, _ = _volume_once(data)
            for key, value in step.items():
                times[key].append(value)
        if label == "uncompressed":
            totals, cpu = times["total"], times["cpu"]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{label:18s} {len(data) / 1e6:6.1f} MB  read {med['read']:.2f} s  submit {med['submit']:.2f} s  "
              f"model + per-eye {med['reading']:.2f} s  total p50 {med['total']:.2f} s "
              f"p95 {_percentile(times['total'], 95):.2f} s  CPU {med['cpu']:.2f} s  ({eye.diagnosis if eye else 'no reading'})",
              flush=True)
    per_scan, per_scan_cpu = _singles(files[: args.singles]) if args.singles else (float("nan"), float("nan"))
    singles_s, singles_cpu = per_scan * args.slices, per_scan_cpu * args.slices
    if totals:
        p50, p95, cpu50 = statistics.median(totals), _percentile(totals, 95), statistics.median(cpu)
        print(f"lone uploads       {per_scan * 1000:.0f} ms per B-scan, CPU {per_scan_cpu * 1000:.0f} ms "
              f"(submit + read alone, {args.singles} files): {singles_s:.2f} s for {args.slices}")
        print(f"KEY slices={args.slices} repeat={args.repeat} total_p50_s={p50:.2f} total_p95_s={p95:.2f} "
              f"cpu_p50_s={cpu50:.2f} singles_s={singles_s:.2f} singles_cpu_s={singles_cpu:.2f} "
              f"speedup_vs_singles={singles_s / p50:.1f}x cpu_speedup_vs_singles={singles_cpu / cpu50:.1f}x")


def _volume_once(data: bytes):
    """Read, submit and read one volume; the seconds of each step, the per-eye reading and the volume."""
    from django.db import transaction  # noqa: PLC0415

    from inference.selectors import volume_reading  # noqa: PLC0415
    from inference.services import predict_scans  # noqa: PLC0415
    from intake.formats import volume_source_read  # noqa: PLC0415
    from intake.volumes import volume_submit  # noqa: PLC0415
    from tests.factories import CaseFactory  # noqa: PLC0415

    case = CaseFactory()
    c0, t0 = time.process_time(), time.perf_counter()
    source = volume_source_read(data, name="bench.dcm")
    t1 = time.perf_counter()
    with transaction.atomic():
        volume = volume_submit(case=case, source=source, uploaded_by=None)
    t2 = time.perf_counter()
    predict_scans(scan_ids=list(volume.scans.order_by("slice_index").values_list("pk", flat=True)))
    eye = volume_reading(volume=volume).reading
    t3, c3 = time.perf_counter(), time.process_time()
    return {"read": t1 - t0, "submit": t2 - t1, "reading": t3 - t2, "total": t3 - t0, "cpu": c3 - c0}, eye, volume


def _singles(files: list[bytes]) -> tuple[float, float]:
    """Mean seconds (wall, CPU) per lone upload: ``scan_submit`` of the file, then its reading alone."""
    from django.core.files.base import ContentFile  # noqa: PLC0415

    from inference.services import predict_scans  # noqa: PLC0415
    from intake.services import scan_submit  # noqa: PLC0415
    from tests.factories import CaseFactory  # noqa: PLC0415

    case = CaseFactory()
    cpu, started = time.process_time(), time.perf_counter()
    for index, data in enumerate(files):
        scan = scan_submit(case=case, file=ContentFile(data, name=f"lone-{index}.jpeg"), uploaded_by=None)
        predict_scans(scan_ids=[scan.pk])
    n = max(1, len(files))
    return (time.perf_counter() - started) / n, (time.process_time() - cpu) / n


def _readings_out(path: Path, data: bytes, files: list[bytes]) -> None:
    """Write the readings of one volume's B-scans (slice order) and of the lone uploads."""
    import json  # noqa: PLC0415

    from django.core.files.base import ContentFile  # noqa: PLC0415

    from inference.models import Prediction  # noqa: PLC0415
    from inference.services import predict_scans  # noqa: PLC0415
    from intake.services import scan_submit  # noqa: PLC0415
    from tests.factories import CaseFactory  # noqa: PLC0415

    fields = ("p_cnv", "p_dme", "p_drusen", "p_normal", "predicted", "confidence", "gate_passed", "oct_score",
              "quality_score", "low_confidence")

    def rows(scan_ids: list[int]) -> list[dict]:
        by_scan = {p["scan_id"]: p for p in Prediction.objects.filter(scan_id__in=scan_ids).values("scan_id", *fields)}
        return [{k: by_scan[i][k] for k in fields} for i in scan_ids]

    _, _, volume = _volume_once(data)
    out = {"volume": rows(list(volume.scans.order_by("slice_index").values_list("pk", flat=True)))}
    case = CaseFactory()
    lone = []
    for index, blob in enumerate(files):
        scan = scan_submit(case=case, file=ContentFile(blob, name=f"lone-{index}.jpeg"), uploaded_by=None)
        predict_scans(scan_ids=[scan.pk])
        lone.append(scan.pk)
    out["lone"] = rows(lone)
    path.write_text(json.dumps(out, indent=1))
    print(f"{len(out['volume'])} volume and {len(out['lone'])} lone readings written to {path}")


def _profile(path: Path, data: bytes) -> None:
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    _volume_once(data)  # warm: first queries, imports
    # CPU time, not wall time: on a shared machine the wall clock counts the waits for a core.
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    step, _, _ = _volume_once(data)
    profiler.disable()
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(path))
    print(" ".join(f"{k} {v:.2f} s" for k, v in step.items()),
          "(frames encoded on 1 thread, OCT_VOLUME_ENCODE_THREADS=1, for cProfile to see them)")
    stats = pstats.Stats(str(path))
    _stages(stats)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(60)


# The volume path's stages and, indented, what they spend it on: (depth, label, functions
# whose cumulative CPU time adds up to the stage; a function absent from the profile counts 0,
# "a>b" is b's time under a only, "-" subtracts what another line of the table counts).
STAGES = [
    (0, "read (parse, de-identify, decode)", ["intake/formats.py:volume_source_read"]),
    (1, "frames encoded as PNG", ["intake/source.py:frame_png"]),
    (0, "submit (volume_submit)", ["intake/volumes.py:volume_submit"]),
    (1, "scan rows saved (audit log included)", ["cases/services.py:scan_register>django/db/models/base.py:save"]),
    (2, "audit log entries", ["auditlog/receivers.py:log_create"]),
    (1, "image files written", ["cases/services.py:scan_register>django/db/models/fields/files.py:save"]),
    (1, "full_clean", ["cases/services.py:_full_clean"]),
    (1, "review opened (one per volume)", ["verification/services.py:review_open"]),
    (0, "reading (predict_scans)", ["inference/services/run.py:predict_scans"]),
    (1, "stored B-scans loaded and decoded", ["inference/services/run.py:_load_image"]),
    (1, "model (preprocess, ONNX run, heatmap grid, quality)", ["inference/runtime.py:predict_images"]),
    (2, "ONNX session run", ["inference/runtime.py:run_arrays"]),
    (2, "preprocessing", ["inference/preprocessing.py:preprocess"]),
    (2, "heatmap mapped onto the image grid", ["inference/preprocessing.py:heatmap_to_grid"]),
    (1, "heatmap grid encoded as PNG", ["inference/heatmap.py:heatmap_grid_png"]),
    (1, "readings stored (rows, status, locks)", ["inference/services/run.py:_finish",
                                                   "inference/services/run.py:_store_batch",
                                                   "-inference/services/run.py:_store_batch>"
                                                   "inference/services/run.py:scans_reading_copy"]),
    (1, "readings copied onto the scans", ["inference/services/run.py:scans_reading_copy"]),
    (1, "claims", ["inference/services/run.py:_claim"]),
    (0, "per-eye rule (volume_reading)", ["inference/selectors.py:volume_reading"]),
]


def _stages(stats) -> None:
    """Print the CPU seconds of each stage of the volume path (cumulative, from the profile)."""
    entries = stats.stats  # (file, line, function) -> (calls, primitive calls, tottime, cumtime, callers)
    total = max(ct for _, _, _, ct, _ in entries.values())

    def matches(key, spec: str) -> bool:
        path, func = spec.rsplit(":", 1)
        return key[0].endswith(path) and key[2] == func

    def cumulative(spec: str) -> float:
        if spec.startswith("-"):  # counted under another line of the table
            return -cumulative(spec[1:])
        if ">" not in spec:
            return sum(v[3] for k, v in entries.items() if matches(k, spec))
        # "caller>callee": the callee's cumulative time spent under that caller only.
        caller, callee = spec.split(">")
        return sum(c[3] for k, v in entries.items() if matches(k, callee)
                   for ck, c in v[4].items() if matches(ck, caller))

    print(f"{'stage (CPU seconds, cProfile)':58s} {'s':>6s} {'share':>6s}")
    for depth, label, specs in STAGES:
        seconds = sum(cumulative(spec) for spec in specs)
        print(f"{'  ' * depth + label:58s} {seconds:6.3f} {seconds / total:6.1%}")
    print(f"{'total':58s} {total:6.3f}")


def _rss(args, root: Path) -> None:
    """Peak resident set of a fresh process that reads, submits and reads one volume.

    The file is made by another process first, so that building it does not count."""
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        path = Path(tmp) / "volume.dcm"
        for mode in ("--rss-make", "--rss-child"):
            done = subprocess.run(
                [sys.executable, __file__, mode, str(path), "--rss-slices", str(args.rss_slices)],
                capture_output=True, text=True, env={**os.environ, "OCT_DATA_DIR": str(root)}, check=False,
            )
            sys.stdout.write(done.stdout)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(done.returncode)


def _rss_make(args, root: Path, dicom_files) -> None:
    frames, _ = _frames(root, args.rss_slices, size=(1536, 496))
    args.rss_make.write_bytes(dicom_files.opt_bytes(frames))


def _rss_child(args) -> None:
    from inference.services import get_model  # noqa: PLC0415

    get_model()
    data = args.rss_child.read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step, eye, _ = _volume_once(data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS slices={args.rss_slices} size=1536x496 file_mb={len(data) / 1e6:.1f} "
          f"model_loaded_mb={before:.0f} peak_mb={peak:.0f} total_s={step['total']:.2f} cpu_s={step['cpu']:.2f} "
          f"({eye.diagnosis if eye else 'no reading'})")


def _frames(root: Path, count: int, *, size: tuple[int, int]) -> tuple[list[np.ndarray], list[bytes]]:
    """``count`` real B-scans of ``size`` (cycled when fewer), and their files as in the data set."""
    frames: list[np.ndarray] = []
    files: list[bytes] = []
    with (root / "MANIFEST.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if not row["path"].startswith("kermany/") or len(frames) >= count:
                continue
            data = (root / row["path"]).read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                if img.size == size:
                    frames.append(np.asarray(img.convert("L")))
                    files.append(data)
    if not frames:
        raise SystemExit(f"no B-scans of {size} under {root}")
    return [frames[i % len(frames)] for i in range(count)], files


if __name__ == "__main__":
    main()
