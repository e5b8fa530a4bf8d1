"""Time every page and list endpoint on a large database (figures, not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/octscale .venv/bin/python manage.py migrate
    DATABASE_URL=... .venv/bin/python manage.py setup_roles
    DATABASE_URL=... .venv/bin/python manage.py seed_scale --scans 1000000
    DATABASE_URL=... .venv/bin/python bench/pages.py [--repeat 7]

Requests go through Django's test client in this process (no network, no server), as
the signed-in user of each role. Each page prints its p50/p95 over ``--repeat`` runs,
its number of SQL queries, the bytes it returned and its ratio to the baseline: the
static "about" page, timed in the same process, which costs no query. The first run
of each page is a warm-up and not counted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.base")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from cases.models import Case, Patient, Scan, Volume  # noqa: E402
from cases.roles import Role  # noqa: E402


def user(username: str, role: str):
    from django.contrib.auth.models import Group

    u, _ = get_user_model().objects.get_or_create(username=username)
    u.groups.add(Group.objects.get_or_create(name=role)[0])
    return u


def timed(client: Client, url: str, repeat: int) -> tuple[list[float], int, int, int]:
    times, queries, size, status = [], 0, 0, 0
    for i in range(repeat + 1):
        connection.queries_log.clear()  # its 9,000-entry cap would stop the counts
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.get(url, HTTP_HOST="127.0.0.1")
            body = b"".join(response.streaming_content) if response.streaming else response.content
            elapsed = (time.perf_counter() - t0) * 1000
        if i:
            times.append(elapsed)
        queries, size, status = len(ctx.captured_queries), len(body), response.status_code
    return times, queries, size, status


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", action="append", default=[], help="time only pages whose name contains this (repeatable)")
    args = parser.parse_args()
    settings.ALLOWED_HOSTS = ["127.0.0.1", "testserver"]
    settings.DEBUG = False
    scans = Scan.objects.count()
    patient = Patient.objects.order_by("-id").first()
    case = Case.objects.order_by("-id").first()
    scan = Scan.objects.order_by("-id").first()
    print(f"database {connection.vendor}, {scans:,} scans, {Patient.objects.count():,} patients; "
          f"{args.repeat} timed runs per page after one warm-up")
    roles = {
        "clinic": user("bench-clinician", Role.CLINICIAN),
        "t1": get_user_model().objects.filter(username="scale-grader1").first() or user("bench-t1", Role.GRADER_T1),
        "t2": user("bench-t2", Role.GRADER_T2),
        "t3": user("bench-t3", Role.GRADER_T3),
        # The seeded tier 2 grader, who graded every scan past grading: sees those readings.
        "t2a": get_user_model().objects.filter(username="scale-grader2a").first() or user("bench-t2a", Role.GRADER_T2),
    }
    clients = {}
    for key, u in roles.items():
        clients[key] = Client()
        clients[key].force_login(u)
    pages = [
        ("baseline: about page", "clinic", "/about/"),
        ("patient list", "clinic", "/patients/"),
        ("patient list page 200", "clinic", "/patients/?page=200"),
        ("patient search", "clinic", f"/patients/?q={patient.identifier[:-1]}"),
        ("patient page", "clinic", f"/patients/{patient.pk}/"),
        ("case page", "clinic", f"/cases/{case.pk}/"),
        ("scan page", "clinic", f"/scans/{scan.pk}/"),
        ("worklist tier 1", "t1", "/verification/worklist/1/"),
        ("worklist tier 2", "t2", "/verification/worklist/2/"),
        ("worklist tier 3", "t3", "/verification/worklist/3/"),
        ("worklist tier 1 next", "t1", "/verification/worklist/1/next/"),
        ("worklist tier 2 next", "t2", "/verification/worklist/2/next/"),
        ("worklist tier 3 next", "t3", "/verification/worklist/3/next/"),
        ("statistics", "t3", "/verification/statistics/"),
        ("API scans page 1", "clinic", "/api/scans/"),
        ("API scans page 200", "clinic", "/api/scans/?page=200"),
        ("API patients", "clinic", "/api/patients/"),
        ("API worklist tier 2", "t2", "/api/verification/worklist/2/"),
    ]
    extra = [
        ("explore", "clinic", "/explore/"),
        ("explore urgent", "clinic", "/explore/?urgency=urgent"),
        ("explore DRUSEN, grading", "clinic", "/explore/?predicted=DRUSEN&stage=grading"),
        ("explore device, page 40", "clinic", "/explore/?device=spectralis&page=40"),
        ("explore verified CNV, arbitration", "clinic", "/explore/?verified=CNV&stage=arbitration"),
        ("explore disagree", "clinic", "/explore/?agreement=disagree"),
        ("explore exam dates", "clinic", "/explore/?date_from=2021-01-01&date_to=2021-03-31"),
        ("explore tier 2 (blinded)", "t2", "/explore/"),
        ("explore tier 2 (graded)", "t2a", "/explore/"),
        ("explore tier 3", "t3", "/explore/"),
        ("clinic home", "clinic", "/home/"),
        ("API worklist tier 2 page 30", "t2", "/api/verification/worklist/2/?page=30"),
        ("API v1 worklist tier 2", "t2", "/api/v1/verification/worklist/2/"),
        ("API worklist tier 1", "t1", "/api/verification/worklist/1/"),
    ]
    # Volumes reviewed as one eye (seed_scale --volumes): their worklists and pages.
    volume = Volume.objects.filter(review__stage="quality_control").order_by("-id").first()
    if volume is not None:
        extra += [
            ("volume examination page", "clinic", f"/cases/{volume.case_id}/"),
            ("volume grading tier 1", "t1", f"/verification/volumes/{volume.pk}/tier/1/"),
            ("API v1 volume worklist tier 1", "t1", "/api/v1/verification/worklist/1/volumes/"),
            ("API v1 volume worklist tier 2", "t2", "/api/v1/verification/worklist/2/volumes/"),
            ("API v1 volume worklist tier 3", "t3", "/api/v1/verification/worklist/3/volumes/"),
        ]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}: a shared machine gives noisy figures; compare ratios")
    print(f"{'page':28} {'p50 ms':>9} {'p95 ms':>9} {'queries':>8} {'KB':>8} {'x base':>8}  status")
    base = None
    for name, who, url in pages + extra:
        if args.only and name != pages[0][0] and not any(word in name for word in args.only):
            continue
        times, queries, size, status = timed(clients[who], url, args.repeat)
        if status == 404 and (name, who, url) in extra:
            continue
        p50 = statistics.median(times)
        base = base or p50
        print(f"{name:28} {p50:9.1f} {p95(times):9.1f} {queries:8d} {size / 1024:8.1f} {p50 / base:8.1f}  {status}")


if __name__ == "__main__":
    main()
