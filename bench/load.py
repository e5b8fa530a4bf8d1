"""Load benchmark: clinicians browsing through gunicorn, driven by locust (figures, not a test).

Starts, in a temporary folder and on loopback only, a fresh SQLite database (or the
PostgreSQL database of ``--database-url``, created if missing, never dropped), seeds one
clinic account per simulated user and a case with ``--scans`` B-scans (real ones from
``OCT_DATA_DIR`` when present, generated otherwise), and serves the app as deployed:
``gunicorn`` with the production settings and ``--workers`` processes. Then locust, in
this process and headless, runs ``--users`` clinicians for ``--duration`` seconds, each
signed in with its own session and moving through the pages a clinician uses (patient
list, examination page and its status poll, scan page, scan image, the scans API), plus
one probe hitting ``/readyz`` every second as a load balancer would.

    .venv/bin/python bench/load.py                          # 20 users, 30 s, 2 gunicorn workers
    .venv/bin/python bench/load.py --users 50 --duration 60 --workers 4
    .venv/bin/python bench/load.py --database-url postgres://postgres@127.0.0.1:5432/octportal_load

Prints per-request figures (requests, failures, requests/s, p50/p95/p99 in ms); the last
line (``KEY ...``) gives the totals.
"""
# locust patches the standard library with gevent when imported: it comes first.
from locust import HttpUser, between, constant, events, task  # isort: skip
from locust.env import Environment  # isort: skip

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PASSWORD = "load-bench-pass-" + secrets.token_hex(4)

SETUP = """
import io, os, sys
from datetime import date
from pathlib import Path
import numpy as np
from PIL import Image
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from cases.models import Case, Patient
from cases.roles import Role
from cases.services import scan_register
users, scans, password = int(os.environ["LOAD_USERS"]), int(os.environ["LOAD_SCANS"]), os.environ["LOAD_PASSWORD"]
group = Group.objects.get(name=Role.CLINICIAN)
for i in range(users):
    u, _ = get_user_model().objects.get_or_create(username=f"load{i}")
    u.set_password(password)
    u.save()
    u.groups.add(group)
patient, _ = Patient.objects.get_or_create(identifier="LOAD-0001", defaults={"birth_year": 1956})
case = Case.objects.create(patient=patient, eye="OD", exam_date=date(2026, 11, 2))
folder = Path(os.environ["OCT_DATA_DIR"]) / "kermany"
paths = sorted(folder.glob("*/*.jp*g"))[:scans] if folder.is_dir() else []
rng = np.random.default_rng(0)
ids = []
for i in range(scans):
    if i < len(paths):
        data, name = paths[i].read_bytes(), f"load-{i}.jpeg"
    else:
        rows = np.arange(496)[:, None]
        band = 180 * np.exp(-(((rows - 220 - 10 * np.sin(np.arange(768)[None, :] / 60.0)) / 30.0) ** 2))
        buf = io.BytesIO()
        Image.fromarray(np.clip(20 + band + rng.normal(0, 18, (496, 768)), 0, 255).astype(np.uint8)).save(buf, "PNG")
        data, name = buf.getvalue(), f"load-{i}.png"
    scan = scan_register(case=case, file=SimpleUploadedFile(name, data), uploaded_by=None)
    ids.append(scan.pk)
print("CASE", case.pk, "SCANS", ",".join(map(str, ids)), "REAL", min(len(paths), scans))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_postgres_database(url: str) -> None:
    """Create the benchmark's database if it does not exist (never drops anything)."""
    import psycopg2

    parts = urllib.parse.urlparse(url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit("--database-url must be on loopback")
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                            password=parts.password or "", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


class Stack:
    """The database, the seed and gunicorn, started by this script; stopped at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="octportal-load-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "octportal.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            # Plain HTTP on loopback: no HTTPS redirect, cookies without the secure flag.
            "DJANGO_SECURE_COOKIES": "false",
            "OCT_SSL_REDIRECT": "false",
            "DATABASE_URL": args.database_url or f"sqlite:///{self.tmp / 'db.sqlite3'}",
            "MEDIA_ROOT": str(self.tmp / "media"),
            "CELERY_BROKER_URL": "",
            "DJANGO_LOG_LEVEL": "WARNING",
            "OCT_DATA_DIR": os.environ.get("OCT_DATA_DIR", str(REPO.parent / "shared" / "oct")),
            "LOAD_USERS": str(args.users),
            "LOAD_SCANS": str(args.scans),
            "LOAD_PASSWORD": PASSWORD,
        }
        self.workers = args.workers

    def manage(self, *cmd: str) -> str:
        out = subprocess.run([PY, "manage.py", *cmd], cwd=REPO, env=self.env, capture_output=True, text=True,
                             timeout=600, check=False)
        if out.returncode:
            raise SystemExit(f"manage.py {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
        return out.stdout

    def start(self) -> tuple[str, int, list[int], int]:
        if self.env["DATABASE_URL"].startswith("postgres"):
            ensure_postgres_database(self.env["DATABASE_URL"])
        self.manage("migrate", "--noinput")
        self.manage("register_model")
        seeded = re.search(r"CASE (\d+) SCANS ([\d,]+) REAL (\d+)", self.manage("shell", "-c", SETUP))
        case_id, scan_ids, real = int(seeded.group(1)), [int(i) for i in seeded.group(2).split(",")], int(seeded.group(3))
        log = open(self.tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(Path(PY).parent / "gunicorn"), "octportal.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--timeout", "60"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start:\n{(self.tmp / 'gunicorn.log').read_text()[-2000:]}")
                time.sleep(0.2)
        return url, case_id, scan_ids, real

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Seed:
    case_id = 0
    scan_ids: list[int] = []
    next_user = 0
    signed_in = 0


class Clinician(HttpUser):
    """A clinician with their own account and session, pausing 0.5-2 s between pages."""

    wait_time = between(0.5, 2.0)
    weight = 10

    def on_start(self) -> None:
        username = f"load{Seed.next_user}"
        Seed.next_user += 1
        self.client.get("/accounts/login/", name="login page")
        token = self.client.cookies.get("csrftoken", "")
        response = self.client.post(
            "/accounts/login/", {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": self.host + "/accounts/login/"}, name="sign in", allow_redirects=False,
        )
        if response.status_code != 302:
            raise RuntimeError(f"sign-in of {username} failed: HTTP {response.status_code}")
        Seed.signed_in += 1

    def _get(self, path: str, name: str, **kw) -> None:
        """GET expecting 200 itself: a redirect (e.g. to the sign-in page) counts as a failure."""
        with self.client.get(path, name=name, allow_redirects=False, catch_response=True, **kw) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    def _scan(self) -> int:
        return Seed.scan_ids[int(time.monotonic() * 1000) % len(Seed.scan_ids)]

    @task(3)
    def patient_list(self) -> None:
        self._get("/patients/", "/patients/")

    @task(3)
    def case_page(self) -> None:
        self._get(f"/cases/{Seed.case_id}/", "/cases/<id>/")

    @task(4)
    def case_status_poll(self) -> None:
        self._get(f"/analysis/cases/{Seed.case_id}/status/", "/analysis/cases/<id>/status/")

    @task(2)
    def scan_page(self) -> None:
        self._get(f"/scans/{self._scan()}/", "/scans/<id>/")

    @task(2)
    def scan_image(self) -> None:
        self._get(f"/scans/{self._scan()}/image/", "/scans/<id>/image/")

    @task(1)
    def scans_api(self) -> None:
        self._get("/api/scans/", "/api/scans/", headers={"Accept": "application/json"})


class ReadinessProbe(HttpUser):
    """A load balancer's readiness probe, once a second."""

    wait_time = constant(1.0)
    fixed_count = 1

    @task
    def readyz(self) -> None:
        self.client.get("/readyz", name="/readyz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="simulated clinicians (each its own account)")
    parser.add_argument("--spawn-rate", type=float, default=10.0, help="clinicians started per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load after the ramp-up")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--scans", type=int, default=20, help="B-scans in the seeded examination")
    parser.add_argument("--database-url", default=os.environ.get("OCT_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    if not 1 <= args.users <= 500 or args.duration > 600:
        raise SystemExit("--users must be 1..500 and --duration at most 600 s")

    stack = Stack(args)
    try:
        url, Seed.case_id, Seed.scan_ids, real = stack.start()
        print(f"gunicorn on {url} ({args.workers} workers, production settings, "
              f"{'PostgreSQL' if args.database_url else 'SQLite'}); {len(Seed.scan_ids)} scans "
              f"({real} real B-scans); {args.users} clinicians + 1 readiness probe for {args.duration:.0f} s")
        env = Environment(user_classes=[Clinician, ReadinessProbe], host=url, events=events)
        runner = env.create_local_runner()
        runner.start(args.users + 1, spawn_rate=args.spawn_rate)
        # Measure the steady state, not the ramp-up and its sign-ins (password hashing).
        deadline = time.monotonic() + 120 + args.users / args.spawn_rate
        while Seed.signed_in < args.users and time.monotonic() < deadline:
            gevent.sleep(0.2)
        if Seed.signed_in < args.users:
            raise SystemExit(f"only {Seed.signed_in} of {args.users} clinicians signed in within the ramp-up")
        env.stats.reset_all()
        gevent.sleep(args.duration)
        runner.quit()
        report(env, args.duration)
    finally:
        stack.stop()


def report(env: Environment, duration: float) -> None:
    rows = sorted(env.stats.entries.values(), key=lambda e: e.name)
    print(f"\n{'request':34} {'count':>7} {'fail':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
    for e in rows:
        if not e.num_requests:
            continue
        print(f"{e.method + ' ' + e.name:34} {e.num_requests:7d} {e.num_failures:5d} {e.num_requests / duration:7.1f} "
              f"{e.get_response_time_percentile(0.5):6.0f} {e.get_response_time_percentile(0.95):6.0f} "
              f"{e.get_response_time_percentile(0.99):6.0f}")
    for (method, name), err in env.stats.errors.items():
        print(f"error: {method} {name}: {err.error} x{err.occurrences}")
    total = env.stats.total
    print(f"KEY requests={total.num_requests} failures={total.num_failures} rps={total.num_requests / duration:.1f} "
          f"p50_ms={total.get_response_time_percentile(0.5):.0f} p95_ms={total.get_response_time_percentile(0.95):.0f} "
          f"p99_ms={total.get_response_time_percentile(0.99):.0f}")


if __name__ == "__main__":
    main()
