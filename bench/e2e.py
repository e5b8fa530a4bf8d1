"""End-to-end benchmark: uploads over HTTP until the result is visible (figures, not a test).

Sends N real B-scans, one per request, to ``POST /api/cases/<id>/scans/`` at a fixed
rate (default 10 per second), while polling the case status endpoint the pages' poller
uses (``/analysis/cases/<id>/status/``) until every scan is analysed. Reports
upload-to-visible-result latency (p50 / p95) and scans per second.

By default it starts everything itself on loopback, in a temporary folder: a fresh
SQLite database (or ``--database-url``), ``manage.py runserver``, and one
``celery -A octportal worker --pool=prefork --concurrency=1`` on Redis
(``--broker``, default ``redis://127.0.0.1:6379/14``, flushed first). Without a
reachable Redis it falls back to the embedded mode (inference inside the upload
request) and says so. Or point it at a running server with ``--url`` (loopback only)
and the credentials of a clinic user plus a case id.

    .venv/bin/python bench/e2e.py                      # 50 uploads at 10/s
    .venv/bin/python bench/e2e.py --count 100 --rate 20
    .venv/bin/python bench/e2e.py --url http://127.0.0.1:8000 --username clinician --password ... --case 1

``--volume N`` measures a volume instead (issue 12): an uncompressed DICOM OPT file of N
real B-scans (made by ``bench/volume.py --files-out``) uploaded to the same endpoint,
from the last byte of the request sent to the per-eye reading visible (the database polled
every ``--poll-ms`` until no B-scan waits, then ``GET /api/volumes/<id>/reading/`` answered
with the reading), ``--repeat`` times, each into a fresh examination; after each volume,
the same B-scans' files as in the data set uploaded one by one into another fresh
examination, each request sent when the previous answered, until every reading is
visible (the examination's status endpoint answered): the lone-upload baseline, scaled
to N. CPU seconds are those of the server and worker processes (PostgreSQL and Redis not
counted).

    .venv/bin/python bench/e2e.py --volume 49 --repeat 5 --worker-concurrency 2 \
        --database-url postgres://postgres@127.0.0.1:5432/octportal_bench

The last line prints the key figure.
"""
from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MAX_WALL_S = 300


class Session:
    """A tiny cookie-keeping HTTP client for Django session auth with CSRF."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None, timeout=30):
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, username: str, password: str) -> None:
        status, body = self.request("GET", "/accounts/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1).decode() if token else ""}
        ).encode()
        status, body = self.request(
            "POST", "/accounts/login/", form,
            {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + "/accounts/login/"},
        )
        if not any(c.name == "sessionid" for c in self.jar):
            raise SystemExit(f"login as {username} failed (HTTP {status})")

    def _upload_request(self, case_id: int, name: str, data: bytes, content_type: str) -> tuple[bytes, dict]:
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-CSRFToken": self.csrf(),
                   "Referer": self.base + "/", "Accept": "application/json"}
        return body, headers

    def upload(self, case_id: int, name: str, data: bytes, content_type: str = "image/jpeg") -> tuple[int, dict]:
        body, headers = self._upload_request(case_id, name, data, content_type)
        status, raw = self.request("POST", f"/api/cases/{case_id}/scans/", body, headers)
        return status, _json(raw)

    def upload_timed(self, case_id: int, name: str, data: bytes, content_type: str) -> tuple[int, dict, float, float]:
        """Upload one file; also return when its last byte was sent and when the answer came
        (``time.perf_counter()``)."""
        body, headers = self._upload_request(case_id, name, data, content_type)
        parts = urllib.parse.urlparse(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        try:
            conn.putrequest("POST", f"/api/cases/{case_id}/scans/")
            headers["Content-Length"] = str(len(body))
            headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in self.jar)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            conn.send(body)
            sent = time.perf_counter()
            resp = conn.getresponse()
            raw = resp.read()
            answered = time.perf_counter()
        finally:
            conn.close()
        return resp.status, _json(raw), sent, answered


def _json(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except ValueError:
        return {"raw": raw[:200].decode(errors="replace")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not answer within {timeout:.0f} s")


def redis_ok(url: str) -> bool:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.flushdb()
        return True
    except Exception:  # noqa: BLE001
        return False


SETUP = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from datetime import date
from cases.models import Case, Patient
u, _ = get_user_model().objects.get_or_create(username="bench")
u.set_password("bench-pass-123")
u.save()
u.groups.add(Group.objects.get(name="clinic_staff"))
p, _ = Patient.objects.get_or_create(identifier="BENCH-0001")
for _ in range({cases}):
    c = Case.objects.create(patient=p, eye="OD", exam_date=date(2026, 11, 2))
    print("CASE", c.pk)
"""


class Stack:
    """Server + worker started by this script, in their own process groups."""

    def __init__(self, args) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="octportal-e2e-"))
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "octportal.settings.base",
            "DJANGO_DEBUG": "false",
            # IMMEDIATE: concurrent writers wait for the lock instead of failing with "database is locked".
            "DATABASE_URL": args.database_url or f"sqlite:///{self.tmp / 'db.sqlite3'}?transaction_mode=IMMEDIATE",
            "MEDIA_ROOT": str(self.tmp / "media"),
            "DJANGO_LOG_LEVEL": "WARNING",
        }
        if getattr(args, "volume", None):
            # One client polling every few tens of ms and uploading hundreds of B-scans a
            # minute: the per-user API limits would throttle the benchmark itself.
            self.env.update({"OCT_API_RATE_USER": "100000/min", "OCT_API_RATE_UPLOAD": "100000/min"})
        self.concurrency = args.worker_concurrency
        self.mode = "embedded (no broker: inference runs inside the upload request)"
        if redis_ok(args.broker):
            self.env["CELERY_BROKER_URL"] = args.broker
            self.mode = f"worker ({self.concurrency} prefork process(es), Redis {args.broker})"
        else:
            self.env.pop("CELERY_BROKER_URL", None)
            print(f"note: Redis not reachable at {args.broker}: falling back to the embedded mode")

    def run(self, *cmd: str) -> str:
        out = subprocess.run([PY, "manage.py", *cmd], cwd=REPO, env=self.env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"manage.py {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
        return out.stdout

    def spawn(self, name: str, *cmd: str) -> None:
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(list(cmd), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def start(self, cases: int = 1) -> tuple[str, list[int]]:
        if self.env["DATABASE_URL"].startswith("postgres"):
            ensure_postgres_database(self.env["DATABASE_URL"])
        self.run("migrate", "--noinput")
        case_ids = [int(m) for m in re.findall(r"CASE (\d+)", self.run("shell", "-c", SETUP.format(cases=cases)))]
        if "CELERY_BROKER_URL" in self.env:
            self.spawn("worker", PY, "-m", "celery", "-A", "octportal", "worker", "--pool=prefork",
                       f"--concurrency={self.concurrency}", "--loglevel=WARNING", "--without-gossip",
                       "--without-mingle")
        port = free_port()
        self.spawn("server", PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/accounts/login/")
        if "CELERY_BROKER_URL" in self.env:
            deadline = time.monotonic() + 60
            while b" ready." not in (self.tmp / "worker.log").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.2)
        return url, case_ids

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server and worker processes (and their children)."""
        import psutil  # noqa: PLC0415 - only this mode needs it

        total = 0.0
        for p in self.procs:
            try:
                tree = [psutil.Process(p.pid)]
                tree += tree[0].children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    t = proc.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += t.user + t.system
        return total

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if os.environ.get("OCT_BENCH_KEEP"):
            print(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def ensure_postgres_database(url: str) -> None:
    """Create the benchmark's database if it does not exist (never drops anything)."""
    import psycopg2

    parts = urllib.parse.urlparse(url)
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                            password=parts.password or "", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def load_images(count: int) -> list[tuple[str, bytes]]:
    folder = Path(os.environ.get("OCT_DATA_DIR", REPO.parent / "shared" / "oct"))
    paths = sorted(folder.glob("kermany/*/*.jp*g"))
    if len(paths) < count:
        raise SystemExit(f"need {count} distinct images under {folder}/kermany (found {len(paths)}); lower --count")
    step = len(paths) // count
    return [(f"bench-{i}.jpeg", p.read_bytes()) for i, p in enumerate(paths[::step][:count])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="uploads per second")
    parser.add_argument("--url", help="a running server (loopback only); needs --username/--password/--case")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--case", type=int)
    parser.add_argument("--broker", default=os.environ.get("OCT_BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--database-url", default=os.environ.get("OCT_BENCH_DATABASE_URL"))
    parser.add_argument("--poll-ms", type=int, default=50)
    parser.add_argument("--worker-concurrency", type=int, default=1, help="worker processes (1 ORT thread each)")
    parser.add_argument("--volume", type=int, metavar="N", help="time a volume of N B-scans instead (issue 12)")
    parser.add_argument("--repeat", type=int, default=5, help="--volume: volumes (each with its lone-upload round)")
    args = parser.parse_args()
    if args.count > 500:
        raise SystemExit("--count is capped at 500")
    if args.volume:
        if args.url:
            raise SystemExit("--volume starts its own server and worker (no --url)")
        stack = Stack(args)
        try:
            url, case_ids = stack.start(cases=2 * args.repeat + 1)
            run_volume(url, case_ids, stack, args)
        finally:
            stack.stop()
        return

    stack = None
    if args.url:
        host = urllib.parse.urlparse(args.url).hostname
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise SystemExit("--url must be a loopback address")
        url, case_id, username, password, mode = args.url, args.case, args.username, args.password, "external server"
    else:
        stack = Stack(args)
        url, (case_id,) = stack.start()
        username, password, mode = "bench", "bench-pass-123", stack.mode
    try:
        run(url, case_id, username, password, mode, args)
    finally:
        if stack:
            stack.stop()


def run(url: str, case_id: int, username: str, password: str, mode: str, args) -> None:
    images = load_images(args.count)
    uploader = Session(url)
    uploader.login(username, password)
    poller = Session(url)
    poller.login(username, password)
    print(f"{args.count} uploads at {args.rate:g}/s to {url} (case {case_id}); mode: {mode}; cpu count {os.cpu_count()}")

    started: dict[int, float] = {}  # upload index -> send time
    scan_of: dict[int, int] = {}  # upload index -> scan id
    upload_ms: list[float] = []
    visible_at: dict[int, float] = {}  # scan id -> first time the poller saw it analysed/failed
    final: dict[int, str] = {}
    errors: list[str] = []
    done = threading.Event()

    def send(i: int, t_send: float) -> None:
        delay = t_send - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        started[i] = time.perf_counter()
        status, body = uploader.upload(case_id, *images[i])
        upload_ms.append((time.perf_counter() - started[i]) * 1000)
        if status != 201:
            errors.append(f"upload {i}: HTTP {status} {str(body)[:120]}")
            return
        scan_of[i] = body["accepted"][0]["id"]

    def poll() -> None:
        while not done.is_set():
            status, raw = poller.request("GET", f"/analysis/cases/{case_id}/status/", headers={"Accept": "application/json"})
            now = time.perf_counter()
            if status == 200:
                for row in json.loads(raw)["scans"]:
                    if row["status"] in ("analysed", "failed") and row["id"] not in visible_at:
                        visible_at[row["id"]] = now
                        final[row["id"]] = row["status"]
            time.sleep(args.poll_ms / 1000)

    threading.Thread(target=poll, daemon=True).start()
    t0 = time.perf_counter() + 0.2
    with ThreadPoolExecutor(max_workers=16) as pool:
        for i in range(args.count):
            pool.submit(send, i, t0 + i / args.rate)
    deadline = time.perf_counter() + MAX_WALL_S
    while time.perf_counter() < deadline:
        if scan_of and all(s in visible_at for s in scan_of.values()) and len(scan_of) + len(errors) >= args.count:
            break
        time.sleep(0.05)
    done.set()

    latencies = [(visible_at[s] - started[i]) * 1000 for i, s in scan_of.items() if s in visible_at]
    missing = [s for s in scan_of.values() if s not in visible_at]
    if errors:
        print(f"{len(errors)} upload errors, e.g. {errors[0]}")
    if missing:
        print(f"{len(missing)} scans without a visible result after {MAX_WALL_S} s")
    if not latencies:
        raise SystemExit("no result became visible")
    span = max(visible_at[s] for s in scan_of.values() if s in visible_at) - min(started.values())
    failed = sum(1 for s in scan_of.values() if final.get(s) == "failed")
    lat = np.asarray(latencies)
    print(f"upload request        p50 {np.percentile(upload_ms, 50):7.0f} ms   p95 {np.percentile(upload_ms, 95):7.0f} ms")
    print(f"upload to result      p50 {np.percentile(lat, 50):7.0f} ms   p95 {np.percentile(lat, 95):7.0f} ms   "
          f"max {lat.max():.0f} ms   (poll interval {args.poll_ms} ms)")
    print(f"results               {len(latencies)} visible ({failed} failed), {len(latencies) / span:.1f} scans/s over {span:.1f} s")
    print(f"KEY upload-to-result p95 {np.percentile(lat, 95):.0f} ms (p50 {np.percentile(lat, 50):.0f} ms) at "
          f"{args.rate:g} uploads/s, {len(latencies) / span:.1f} scans/s, mode: {mode}")


def volume_files(slices: int, folder: Path) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The OPT file of ``slices`` real B-scans and their files as in the data set (``bench/volume.py``)."""
    out = subprocess.run([PY, str(REPO / "bench" / "volume.py"), "--files-out", str(folder), "--slices", str(slices)],
                         cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"bench/volume.py --files-out failed:\n{out.stderr[-2000:]}")
    singles = [(p.name, p.read_bytes()) for p in sorted(folder.glob("single-*.jpeg"))]
    return (folder / "volume.dcm").read_bytes(), singles


PENDING_SQL = "SELECT count(*) FROM cases_scan WHERE {column} = {mark} AND status IN ('received', 'queued', 'running')"


class Pending:
    """How many scans of a volume or an examination still wait for their reading, straight
    from the database: polling it costs the server nothing (an API poll every few tens of
    ms would take a good part of a core from the workers it is timing)."""

    def __init__(self, database_url: str) -> None:
        if database_url.startswith("postgres"):
            import psycopg2  # noqa: PLC0415

            parts = urllib.parse.urlparse(database_url)
            self.conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                                         password=parts.password or "", dbname=parts.path.lstrip("/"))
            self.conn.autocommit = True
            self.mark = "%s"
        else:
            import sqlite3  # noqa: PLC0415

            path = urllib.parse.urlparse(database_url.split("?")[0]).path
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self.mark = "?"

    def count(self, column: str, value: int) -> int:
        cur = self.conn.cursor()
        cur.execute(PENDING_SQL.format(column=column, mark=self.mark), [value])
        return int(cur.fetchone()[0])


def _until(done, poll_s: float) -> None:
    """Poll ``done()`` until it is true."""
    deadline = time.perf_counter() + MAX_WALL_S
    while time.perf_counter() < deadline:
        if done():
            return
        time.sleep(poll_s)
    raise SystemExit(f"no reading visible after {MAX_WALL_S} s")


def run_volume(url: str, case_ids: list[int], stack: Stack, args) -> None:
    """Volumes and lone uploads, alternately, against the stack's server and workers."""
    data, singles = volume_files(args.volume, stack.tmp / "files")
    client = Session(url)
    client.login("bench", "bench-pass-123")
    poll_s = args.poll_ms / 1000
    pending = Pending(stack.env["DATABASE_URL"])
    print(f"volume of {args.volume} B-scans ({len(data) / 1e6:.1f} MB), {args.repeat} times, and {len(singles)} lone "
          f"uploads after each, to {url}; mode: {stack.mode}; cpu count {os.cpu_count()}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    def volume_once(case_id: int) -> dict[str, float]:
        cpu = stack.cpu_seconds()
        status, body, sent, answered = client.upload_timed(case_id, "volume.dcm", data, "application/dicom")
        if status != 201 or not body.get("volumes"):
            raise SystemExit(f"volume upload: HTTP {status} {str(body)[:300]}")
        volume_id = body["volumes"][0]["id"]
        _until(lambda: pending.count("volume_id", volume_id) == 0, poll_s)
        # Visible: the reading as the API gives it (one request, timed to its answer).
        code, raw = client.request("GET", f"/api/volumes/{volume_id}/reading/", headers={"Accept": "application/json"})
        seen = time.perf_counter()
        reading = json.loads(raw) if code == 200 else {}
        if reading.get("pending") != 0 or reading.get("reading") is None:
            raise SystemExit(f"volume {volume_id}: no per-eye reading once every B-scan was read: HTTP {code} {raw[:300]}")
        return {"request": answered - sent, "total": seen - sent, "cpu": stack.cpu_seconds() - cpu}

    def singles_once(case_id: int) -> dict[str, float]:
        cpu = stack.cpu_seconds()
        first = None
        ids = []
        for name, blob in singles:
            status, body, sent, _ = client.upload_timed(case_id, name, blob, "image/jpeg")
            if status != 201:
                raise SystemExit(f"lone upload: HTTP {status} {str(body)[:300]}")
            first = sent if first is None else first
            ids.append(body["accepted"][0]["id"])
        _until(lambda: pending.count("case_id", case_id) == 0, poll_s)
        code, raw = client.request("GET", f"/analysis/cases/{case_id}/status/", headers={"Accept": "application/json"})
        seen = time.perf_counter()
        rows = json.loads(raw)["scans"] if code == 200 else []
        if sorted(r["id"] for r in rows if r["status"] in ("analysed", "failed")) != sorted(ids):
            raise SystemExit(f"examination {case_id}: not every lone upload read: HTTP {code} {raw[:300]}")
        return {"total": seen - first, "cpu": stack.cpu_seconds() - cpu}

    volume_once(case_ids[0])  # warm: the first request's imports, the worker's first batch
    volumes, lone = [], []
    for r in range(args.repeat):
        volumes.append(volume_once(case_ids[1 + 2 * r]))
        lone.append(singles_once(case_ids[2 + 2 * r]))
        print(f"  {r + 1}: volume {volumes[-1]['total']:.2f} s (upload request {volumes[-1]['request']:.2f} s, "
              f"CPU {volumes[-1]['cpu']:.2f} s); {len(singles)} lone uploads {lone[-1]['total']:.2f} s "
              f"(CPU {lone[-1]['cpu']:.2f} s)", flush=True)
    total = np.asarray([v["total"] for v in volumes])
    p50, p95 = float(np.percentile(total, 50)), float(np.percentile(total, 95))
    cpu = float(np.median([v["cpu"] for v in volumes]))
    request = float(np.median([v["request"] for v in volumes]))
    scale = args.volume / len(singles)
    lone_s = float(np.median([x["total"] for x in lone])) * scale
    lone_cpu = float(np.median([x["cpu"] for x in lone])) * scale
    print(f"volume                last byte to eye reading p50 {p50:.2f} s  p95 {p95:.2f} s  (upload request "
          f"{request:.2f} s; poll interval {args.poll_ms} ms)  CPU {cpu:.2f} s")
    print(f"lone uploads          {lone_s / args.volume * 1000:.0f} ms per B-scan, CPU {lone_cpu / args.volume * 1000:.0f} ms: "
          f"{lone_s:.2f} s for {args.volume}")
    print(f"KEY volume={args.volume} repeat={args.repeat} total_p50_s={p50:.2f} total_p95_s={p95:.2f} cpu_p50_s={cpu:.2f} "
          f"singles_s={lone_s:.2f} singles_cpu_s={lone_cpu:.2f} speedup_vs_singles={lone_s / p50:.1f}x "
          f"cpu_speedup_vs_singles={lone_cpu / cpu:.1f}x load={os.getloadavg()[0]:.2f} mode: {stack.mode}")


if __name__ == "__main__":
    main()
