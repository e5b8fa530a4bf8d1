"""The verified-label CSV export on a large database: time to the first row, total time,
peak memory, against the previous implementation in the same run (figures, not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/octscale1m .venv/bin/python bench/export.py

Each variant runs in a fresh child process (so that its peak resident memory is its own),
through ``GET /verification/export.csv`` with Django's test client as the seeded tier 3
grader (``scale-grader3``, else a new tier 3 user), reading the streamed body to the end:

* ``keyset``: the shipped ``verification.exports.verified_csv_rows`` (keyset batches);
* ``ids-first`` (baseline): the previous algorithm, reproduced here: every verified
  review id fetched first, then batches of ``pk__in`` ids, one line per chunk; the lines
  themselves are written by the same code, so both bodies must be byte-identical (checked).

Prints, per variant: seconds to the first chunk (the header), to the first data row, in
all; rows; MB; peak RSS above the RSS before the request (VmHWM - VmRSS, Linux); then the
ratios keyset / ids-first. ``--rows N`` stops after N rows (both variants alike);
``--keyset-first`` swaps the order (on a shared machine the load drifts between the two).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("ids-first", "keyset")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(variant: str, limit: int | None) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.base")
    import csv

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse

    from cases.roles import Role
    from verification import exports, selectors

    def ids_first_rows(*, user, batch: int = 500):
        writer = csv.writer(exports._Echo())
        yield writer.writerow(exports.CSV_HEADER)
        reviews = selectors.verified_reviews()
        ids = list(reviews.values_list("pk", flat=True))
        for start in range(0, len(ids), batch):
            chunk = list(reviews.filter(pk__in=ids[start : start + batch]))
            yield from exports._csv_lines(writer, user, chunk)

    if variant == "ids-first":
        exports.verified_csv_rows = ids_first_rows
    settings.ALLOWED_HOSTS = ["127.0.0.1", "testserver"]
    settings.DEBUG = False
    user = get_user_model().objects.filter(username="scale-grader3").first()
    if user is None:
        user, _ = get_user_model().objects.get_or_create(username="bench-t3")
        user.groups.add(Group.objects.get_or_create(name=Role.GRADER_T3)[0])
    client = Client()
    client.force_login(user)
    client.get("/about/", HTTP_HOST="127.0.0.1")  # warm the stack before measuring memory
    rss0 = _status_kb("VmRSS")
    digest, size, lines = hashlib.sha256(), 0, 0
    t0 = time.perf_counter()
    response = client.get(reverse("verification:export_csv"), HTTP_HOST="127.0.0.1")
    first_chunk = first_row = None
    for chunk in response.streaming_content:
        now = time.perf_counter() - t0
        first_chunk = first_chunk if first_chunk is not None else now
        digest.update(chunk)
        size += len(chunk)
        lines += chunk.count(b"\r\n")
        if first_row is None and lines > 1:
            first_row = now
        if limit is not None and lines > limit:
            break
    total = time.perf_counter() - t0
    print(json.dumps({
        "variant": variant, "status": response.status_code, "streaming": response.streaming,
        "first_chunk_s": first_chunk, "first_row_s": first_row, "total_s": total, "rows": lines - 1,
        "mb": size / 1e6, "peak_rss_mb": (_status_kb("VmHWM") - rss0) / 1024, "sha256": digest.hexdigest(),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="stop after this many rows")
    parser.add_argument("--keyset-first", action="store_true", help="run the shipped variant first (load drifts)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows)
        return
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (figures from a shared machine are noisy)")
    results = {}
    for variant in reversed(VARIANTS) if args.keyset_first else VARIANTS:
        cmd = [sys.executable, __file__, "--child", variant] + (["--rows", str(args.rows)] if args.rows else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = r = json.loads(out.strip().splitlines()[-1])
        print(f"{variant:10} status {r['status']} streaming {r['streaming']}: first chunk {r['first_chunk_s']:.3f} s, "
              f"first row {r['first_row_s']:.3f} s, total {r['total_s']:.1f} s, {r['rows']:,} rows, {r['mb']:.1f} MB, "
              f"peak RSS +{r['peak_rss_mb']:.0f} MB")
    old, new = results["ids-first"], results["keyset"]
    same = old["sha256"] == new["sha256"]
    print(f"KEY export rows={new['rows']} first_row_s={new['first_row_s']:.3f} (x{new['first_row_s'] / old['first_row_s']:.2f}) "
          f"total_s={new['total_s']:.1f} (x{new['total_s'] / old['total_s']:.2f}) "
          f"peak_rss_mb={new['peak_rss_mb']:.0f} (baseline {old['peak_rss_mb']:.0f}) same_body={same}")


if __name__ == "__main__":
    main()
