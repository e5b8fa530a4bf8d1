"""Real Celery processes for the tests that need them: a ``celery worker`` (and ``celery
beat``) on real Redis and the real PostgreSQL test database, and this process publishing
to that Redis instead of running tasks eagerly.

One home for the fixtures of tests/integration, tests/deploy/test_remote_worker.py,
tests/integrations/test_schemathesis.py and tests/e2e/test_clinic_walk.py:
``tests/conftest.py`` loads this module as a pytest plugin, so the fixtures are there by
name. Nothing here is autouse.

Needs PostgreSQL (the worker and the tests share the test database), Redis
(``CELERY_TEST_BROKER_URL``, default ``redis://127.0.0.1:6379/15``, flushed before and
after each test that asks for ``broker_url``) and the shipped model. A missing one skips
the test with the reason, unless ``OCT_REQUIRE_SERVICES=1`` (CI), where it fails it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu.pools
import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from cases.models import Scan
from cases.roles import Role
from octportal.celery import app as celery_app
from tests.conftest import oct_data_dir

REPO = Path(__file__).resolve().parents[2]
REQUIRE_SERVICES = os.environ.get("OCT_REQUIRE_SERVICES") == "1"
DEFAULT_BROKER = "redis://127.0.0.1:6379/15"
# Decided at import, before any database setup: a skipped transactional test would still
# flush the test database, for nothing, on SQLite.
ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith(("postgresql", "postgis"))
NEEDS_POSTGRES = "needs PostgreSQL shared with the worker process (run with DATABASE_URL=postgres://...)"


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (OCT_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(reason)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def statuses(ids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Scan.objects.filter(pk__in=ids).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


@pytest.fixture
def groups_after_flush() -> None:
    """Transactional tests flush the tables after each test: the role groups (created by
    a migration) go, and content types come back with new ids, so ids cached in memory
    are stale (auditlog writes content-type foreign keys). Put both right."""
    ContentType.objects.clear_cache()
    for role in Role.values:
        Group.objects.get_or_create(name=role)


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)


@pytest.fixture
def model_available() -> None:
    if not any((REPO / "inference" / "weights").glob("*.onnx")) and not os.environ.get("OCT_MODEL_PATH"):
        unavailable("the shipped model inference/weights/*.onnx is not in the checkout")


@pytest.fixture
def images() -> list[bytes]:
    """Real B-scans when the data folder is there (the real model's gate passes them)."""
    folder = oct_data_dir() / "kermany"
    paths = sorted(folder.rglob("*.jp*g"))[:40] if folder.is_dir() else []
    if not paths:
        unavailable(f"real OCT images not found under {folder} (set OCT_DATA_DIR)")
    return [p.read_bytes() for p in paths]


def _redis_or_unavailable(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {url}: {exc}")
    return client


@pytest.fixture
def broker_url() -> Iterator[str]:
    url = os.environ.get("CELERY_TEST_BROKER_URL", DEFAULT_BROKER)
    client = _redis_or_unavailable(url)
    client.flushdb()
    yield url
    client.flushdb()


def _reset_producer_pool() -> None:
    # The app caches its connection and producer pools (kombu keeps them globally per URL).
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def publish_to() -> Iterator[Callable[[str], None]]:
    """Make this test process publish to a real broker instead of running tasks eagerly."""
    # Celery reads the Django settings under their CELERY_ names first: override those.
    keys = ("CELERY_TASK_ALWAYS_EAGER", "CELERY_BROKER_URL")
    before = {k: celery_app.conf.get(k) for k in keys}

    def use(url: str) -> None:
        _reset_producer_pool()
        celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
        celery_app.conf.CELERY_BROKER_URL = url
        assert not celery_app.conf.task_always_eager and celery_app.conf.broker_url == url

    yield use
    _reset_producer_pool()
    for key, value in before.items():
        setattr(celery_app.conf, key, value)


class Worker:
    """``celery -A octportal worker --pool=prefork --concurrency=1`` in its own process group."""

    def __init__(self, broker: str, log_dir: Path, **env: str) -> None:
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "octportal.settings.base",
            "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "CELERY_BROKER_URL": broker,
            "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
            "DJANGO_LOG_LEVEL": "INFO",
            **env,
        }
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 90) -> None:
        self.starts += 1
        self.log = self.log_dir / f"worker-{self.starts}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "octportal", "worker", "--pool=prefork", "--concurrency=1",
                 "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "--hostname", f"itest{self.starts}-{os.getpid()}@%h"],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(lambda: " ready." in self.text() or self.proc.poll() is not None, timeout=timeout,
                 what=f"the worker to start (log {self.log})")
        assert self.proc.poll() is None, f"worker exited at start:\n{self.text()[-3000:]}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def succeeded(self, task: str) -> int:
        """How many tasks whose name starts with ``task`` this worker finished, by its log."""
        return len(re.findall(rf"Task {re.escape(task)}\w*\[[^\]]+\] succeeded", self.text()))

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool child."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Beat:
    """``celery -A octportal beat``: sends the sweep on the settings' schedule."""

    def __init__(self, broker: str, log_dir: Path, **env: str) -> None:
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "octportal.settings.base", "CELERY_BROKER_URL": broker,
                    **env}
        self.log_dir = log_dir
        self.log = log_dir / "beat.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "octportal", "beat", "--loglevel=INFO",
                 "--schedule", str(self.log_dir / "beat-schedule"), "--pidfile="],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def beat_factory(tmp_path) -> Iterator[Callable[..., Beat]]:
    beats: list[Beat] = []

    def make(broker: str, **env: str) -> Beat:
        b = Beat(broker, tmp_path, **env)
        beats.append(b)
        return b

    yield make
    for b in beats:
        b.stop()


@pytest.fixture
def worker_factory(transactional_db, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Make workers (not started) on the test database; each is killed after the test.

    A worker only sees committed rows, hence ``transactional_db``; depending on it also
    orders the teardown: the workers are killed before the test database is flushed (and,
    at the end of the session, dropped)."""
    workers: list[Worker] = []

    def make(broker: str, **env: str) -> Worker:
        w = Worker(broker, tmp_path, **env)
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.kill()


@pytest.fixture
def reading_worker(postgres, model_available, broker_url, publish_to, worker_factory) -> Worker:
    """A started worker that reads what this process enqueues: tasks are published to
    Redis, not run eagerly. It takes ``MEDIA_ROOT`` as set when it is requested (ask for
    it after overriding the setting, e.g. with ``request.getfixturevalue``)."""
    publish_to(broker_url)
    worker = worker_factory(broker_url)
    worker.start()
    return worker
