"""The claim heartbeat: a live batch keeps its scans' claim fresh, so the sweep's short
stale threshold takes only scans whose worker died."""
from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone

from cases.models import Scan
from inference import services
from inference.services import run
from tests.factories import ScanFactory
from tests.inference.support import fake_model  # noqa: F401


def _aged(status: str, seconds: float) -> Scan:
    scan = ScanFactory(status=status)
    Scan.objects.filter(pk=scan.pk).update(status_changed_at=timezone.now() - timedelta(seconds=seconds))
    scan.refresh_from_db()
    return scan


def test_heartbeat_refreshes_only_running_scans_and_only_when_due(db, settings):
    settings.OCT_INFERENCE_STALE_AFTER = timedelta(seconds=45)
    running = _aged(Scan.Status.RUNNING, 40)
    done = _aged(Scan.Status.ANALYSED, 40)
    ids = [running.pk, done.pk]

    recent = time.monotonic() - 5  # less than 45 / 3 s ago: not due
    assert services.scans_heartbeat(scan_ids=ids, since=recent) == recent
    assert Scan.objects.get(pk=running.pk).status_changed_at == running.status_changed_at

    later = services.scans_heartbeat(scan_ids=ids, since=time.monotonic() - 16)
    assert later > recent
    assert timezone.now() - Scan.objects.get(pk=running.pk).status_changed_at < timedelta(seconds=5)
    assert Scan.objects.get(pk=done.pk).status_changed_at == done.status_changed_at, "finished scans untouched"


def test_a_batch_slower_than_the_threshold_is_not_taken_by_the_sweep(db, fake_model, settings, monkeypatch):  # noqa: F811
    """The model takes longer than the stale threshold; a sweep in the middle finds
    nothing stale and the scans end analysed on the first attempt."""
    settings.OCT_INFERENCE_STALE_AFTER = timedelta(seconds=0.3)
    scans = [ScanFactory(status=Scan.Status.QUEUED) for _ in range(3)]
    ids = [s.pk for s in scans]
    swept: list[int] = []
    slow_predict = fake_model.predict_images

    def predict_then_sweep(images, **kw):
        time.sleep(0.35)  # past the threshold since the claim ...
        out = slow_predict(images, **kw)
        time.sleep(0.2)
        return out

    real_prediction_from = run._prediction_from

    def prediction_from_with_a_sweep(*args, **kw):
        # ... and the sweep runs while the batch's readings are being prepared.
        swept.append(services.stale_scans_requeue())
        return real_prediction_from(*args, **kw)

    monkeypatch.setattr(fake_model, "predict_images", predict_then_sweep)
    monkeypatch.setattr(run, "_prediction_from", prediction_from_with_a_sweep)
    assert services.predict_scans(scan_ids=ids) == 3
    assert swept == [0, 0, 0], "no live scan was re-enqueued"
    assert set(Scan.objects.filter(pk__in=ids).values_list("analysis_attempts", flat=True)) == {1}
