"""A real Celery worker process on real Redis and the real PostgreSQL test database.

What these prove: uploads get predictions from a separate worker; a worker killed
with SIGKILL mid-task loses nothing and every scan it held is read within
RECOVERY_BOUND_S (90 s) of the kill (beat's sweep re-enqueues, and the claim keeps
exactly one prediction per scan); an upload while Redis is down keeps
the scan, and once Redis is back the sweep completes it.

Needs PostgreSQL (the worker and the tests share the test database), Redis
(``CELERY_TEST_BROKER_URL``, default ``redis://127.0.0.1:6379/15``, flushed before and
after each test), ``redis-server`` on PATH for the outage test, and the shipped model.
Skips with the reason when one is missing, unless ``OCT_REQUIRE_SERVICES=1`` (CI),
where a missing service fails the test. The worker fixtures are tests/integration/workers.py's.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from cases.models import Scan
from inference import services
from inference.models import Prediction
from tests.factories import CaseFactory, ScanFactory
from tests.integration.workers import NEEDS_POSTGRES, ON_POSTGRES, statuses, unavailable, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ON_POSTGRES, reason=NEEDS_POSTGRES),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("groups_after_flush"),
]

OUTAGE_PORT = int(os.environ.get("OCT_TEST_OUTAGE_REDIS_PORT", "6390"))
# Seconds from a worker's death to the reading of every scan it held (docs/deployment.md).
RECOVERY_BOUND_S = 90


def upload(client, case, data: bytes, name: str):
    return client.post(
        reverse("cases:scan_upload", args=[case.pk]),
        {"files": [SimpleUploadedFile(name, data, content_type="image/jpeg")]},
    )


def test_uploads_get_predictions_from_a_real_worker(images, reading_worker, client, clinician):
    worker = reading_worker
    case = CaseFactory()
    client.force_login(clinician)
    for i, data in enumerate(images[:3]):
        assert upload(client, case, data, f"upload-{i}.jpeg").status_code == 200
    ids = list(Scan.objects.filter(case=case).values_list("id", flat=True))
    assert len(ids) == 3
    wait_for(lambda: statuses(ids).get("analysed", 0) == 3, timeout=60,
             what=f"3 scans analysed by the worker (now {statuses(ids)}; log {worker.log})")
    for p in Prediction.objects.filter(scan_id__in=ids):
        # The worker keeps the heatmap's grid; the overlay is drawn when first asked for.
        assert p.gate_passed and p.predicted and p.heatmap and p.heatmap_grid
    overlay = client.get(reverse("inference:heatmap", args=[ids[0]]))
    assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")
    # The worker process did the work: each upload's task ended there. Waited for: a task
    # whose scan an earlier task's batch took along may end after all three are analysed.
    wait_for(lambda: worker.succeeded("inference.tasks.predict_scan") >= 3, timeout=30,
             what=f"the 3 uploads' predict_scan tasks to succeed in the worker (log {worker.log})")


def test_worker_killed_mid_task_recovers_within_the_bound_with_one_prediction_per_scan(
    postgres, model_available, images, broker_url, publish_to, worker_factory, beat_factory
):
    """The drill behind the documented recovery bound: the deployment's own stale
    threshold and sweep interval (settings defaults), a real ``celery beat`` sending the
    sweep, and every scan of the killed task analysed within RECOVERY_BOUND_S of the kill."""
    stale_s = django_settings.OCT_INFERENCE_STALE_AFTER.total_seconds()
    sweep_s = float(django_settings.CELERY_BEAT_SCHEDULE["sweep-stale-scans"]["schedule"])
    assert stale_s + sweep_s <= RECOVERY_BOUND_S - 30, "leave 30 s of the bound for the re-run itself"
    publish_to(broker_url)
    beat_factory(broker_url).start()
    worker = worker_factory(broker_url, OCT_INFERENCE_BATCH_SIZE="4")
    worker.start()
    case = CaseFactory()
    scans = [
        ScanFactory(case=case, data=data, format="JPEG", status=Scan.Status.QUEUED) for data in images[:24]
    ]
    ids = [s.pk for s in scans]
    from inference.tasks import predict_batch

    predict_batch.delay(ids)  # one long task: six model batches of four
    wait_for(lambda: Scan.objects.filter(pk__in=ids, status=Scan.Status.RUNNING).exists(), timeout=60,
             interval=0.005, what=f"a scan to be RUNNING (log {worker.log})")
    worker.kill()
    killed_at = time.monotonic()
    at_kill = statuses(ids)
    assert at_kill.get("analysed", 0) < len(ids), f"the kill came too late to interrupt the task: {at_kill}"
    assert Prediction.objects.filter(scan_id__in=ids).count() == at_kill.get("analysed", 0)

    # A replacement worker (in production: any other worker, or the supervisor's restart).
    # The killed task's message stays unacknowledged until Redis' visibility timeout
    # (600 s), so the beat-driven sweep is what recovers the scans.
    worker.start()
    wait_for(lambda: statuses(ids).get("analysed", 0) == len(ids), timeout=RECOVERY_BOUND_S + 30,
             what=f"all scans analysed after the kill (now {statuses(ids)}; log {worker.log})")
    recovered_s = time.monotonic() - killed_at
    print(f"recovery after SIGKILL: {recovered_s:.1f} s (stale {stale_s:.0f} s + sweep every {sweep_s:.0f} s; "
          f"bound {RECOVERY_BOUND_S} s)")
    assert recovered_s <= RECOVERY_BOUND_S, f"recovered in {recovered_s:.1f} s, over the {RECOVERY_BOUND_S} s bound"
    assert "sweep_stale_scans" in worker.text(), "the worker ran the sweep that beat sent"
    per_scan = Prediction.objects.filter(scan_id__in=ids).values_list("scan_id", flat=True)
    assert sorted(per_scan) == sorted(ids), "exactly one prediction per scan"
    interrupted = Scan.objects.filter(pk__in=ids, analysis_attempts__gte=2).count()
    assert interrupted >= 1, "the scans running at the kill were claimed again"


@pytest.fixture
def outage_redis(tmp_path) -> Iterator[Callable[[], None]]:
    """A throwaway redis-server on its own port (never the shared one); returns start()."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (needed for the broker outage test)")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", OUTAGE_PORT)) == 0:
            unavailable(f"port {OUTAGE_PORT} is taken; set OCT_TEST_OUTAGE_REDIS_PORT")
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(OUTAGE_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(port=OUTAGE_PORT, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=10, what=f"redis-server on port {OUTAGE_PORT}")

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_upload_while_redis_is_down_keeps_the_scan_and_completes_later(
    postgres, model_available, images, outage_redis, publish_to, worker_factory, client, clinician, settings, caplog
):
    url = f"redis://127.0.0.1:{OUTAGE_PORT}/0"
    outage_redis()
    publish_to(url)
    worker = worker_factory(url)
    worker.start()
    subprocess.run(["redis-cli", "-p", str(OUTAGE_PORT), "shutdown", "nosave"], check=False, capture_output=True)
    wait_for(lambda: not _pings(redis.Redis(port=OUTAGE_PORT, socket_connect_timeout=0.3)), timeout=10,
             what="the throwaway Redis to stop")

    case = CaseFactory()
    client.force_login(clinician)
    started = time.monotonic()
    response = upload(client, case, images[0], "during-outage.jpeg")
    assert response.status_code == 200, "the upload must succeed while the broker is down"
    assert time.monotonic() - started < 15
    scan = Scan.objects.get(case=case)
    assert scan.status == Scan.Status.QUEUED
    assert f"scan ids {scan.pk}" in caplog.text and "sweep" in caplog.text

    outage_redis()  # Redis is back; the worker reconnects by itself
    wait_for(lambda: "Connected to redis" in worker.text().split("Cannot connect")[-1], timeout=60,
             what=f"the worker to reconnect (log {worker.log})")
    settings.OCT_INFERENCE_STALE_AFTER = timedelta(seconds=0)
    assert services.stale_scans_requeue() == 1
    wait_for(lambda: Scan.objects.get(pk=scan.pk).status == Scan.Status.ANALYSED, timeout=60,
             what=f"the scan analysed after Redis came back (log {worker.log})")
    assert Prediction.objects.filter(scan=scan).count() == 1


def test_the_sweep_does_not_wait_behind_a_backlog_of_readings(
    postgres, model_available, broker_url, publish_to, worker_factory
):
    """The sweep's own queue: with readings queued before it, a plain worker (no -Q) takes
    the sweep within one task of starting, not after the backlog."""
    import re

    from inference.tasks import predict_batch, sweep_stale_scans

    publish_to(broker_url)
    backlog = 12
    for i in range(backlog):
        predict_batch.delay([10**9 + i])  # no such scan: each finds nothing to claim
    sweep_stale_scans.delay()
    worker = worker_factory(broker_url)
    worker.start()
    wait_for(lambda: worker.text().count(" received") >= backlog + 1, timeout=60,
             what=f"every message received (log {worker.log})")
    received = re.findall(r"Task inference\.tasks\.(\w+)\[[^\]]+\] received", worker.text())
    assert sorted(set(received)) == ["predict_batch", "sweep_stale_scans"], received
    position = received.index("sweep_stale_scans")
    assert position <= 2, f"the sweep was taken after {position} of the {backlog} readings queued before it"


def test_readyz_needs_a_worker_answering_the_ping(
    postgres, model_available, broker_url, publish_to, worker_factory, client, settings
):
    from tests.deploy.test_health import _register_shipped_model

    publish_to(broker_url)
    settings.CELERY_BROKER_URL = broker_url
    settings.OCT_HEALTH_TIMEOUT_S = 1.0
    _register_shipped_model()

    def worker_check() -> tuple[int, dict]:
        response = client.get("/readyz")
        return response.status_code, response.json()["checks"]["worker"]

    status, check = worker_check()
    assert (status, check["ok"], check["status"]) == (503, False, "no worker answered")
    worker = worker_factory(broker_url)
    worker.start()
    status, check = worker_check()
    assert (status, check["ok"]) == (200, True), check
    assert check["ms"] < 1000, "the first reply ends the wait"
    worker.kill()
    assert worker_check()[0] == 503
