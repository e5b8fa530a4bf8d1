"""bench/load.py runs: gunicorn with the production settings on loopback, locust
headless, every request answered (a smoke run, not a measurement)."""
from __future__ import annotations

import importlib.util
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
