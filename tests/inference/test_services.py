"""Services of automated reading: claim, idempotence, failure states, sweep, re-run."""
from __future__ import annotations

import io
import logging
from datetime import timedelta

import kombu.exceptions
import pytest
from django.db import transaction
from django.utils import timezone
from PIL import Image

from cases.models import Scan
from inference import services
from inference.heatmap import heatmap_overlay_png
from inference.models import ModelVersion, Prediction
from octportal.errors import Conflict, Forbidden
from tests.factories import ScanFactory
from tests.inference.support import FakeModel, fake_model, make_prediction, png_bytes, real_model_or_skip  # noqa: F401

pytestmark = pytest.mark.django_db


def queued_scan(**kwargs) -> Scan:
    return ScanFactory(status=Scan.Status.QUEUED, **kwargs)


def age(scan: Scan, seconds: int) -> None:
    Scan.objects.filter(pk=scan.pk).update(status_changed_at=timezone.now() - timedelta(seconds=seconds))


# --- one scan ---------------------------------------------------------------------------


def test_prediction_run_stores_reading_and_marks_analysed(fake_model):
    scan = queued_scan()
    prediction = services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == Scan.Status.ANALYSED and scan.status_detail == ""
    assert scan.analysis_attempts == 1
    assert prediction.predicted == "CNV" and prediction.urgency == "urgent"
    assert prediction.probabilities == {"CNV": 0.7, "DME": 0.1, "DRUSEN": 0.1, "NORMAL": 0.1}
    # The overlay is drawn when first asked for: the reading keeps its grid and the file's name.
    assert prediction.heatmap and prediction.heatmap_grid
    assert not prediction.heatmap.storage.exists(prediction.heatmap.name)
    assert prediction.model_version.sha256 == fake_model.sha256
    assert prediction.model_version.is_active  # first version seen becomes active
    assert prediction.model_version.metrics == {"macro_f1": 0.5}


def test_prediction_run_stores_the_quality_score_and_the_low_confidence_flag(fake_model):
    plain, noisy = queued_scan(), queued_scan(data=png_bytes(67, 40))
    services.predict_scans(scan_ids=[plain.pk, noisy.pk])
    ok, flagged = Prediction.objects.get(scan=plain), Prediction.objects.get(scan=noisy)
    assert ok.quality_score == pytest.approx(0.1) and not ok.low_confidence and ok.quality_reasons == []
    assert flagged.quality_score == pytest.approx(0.95) and flagged.low_confidence
    assert flagged.quality_reasons == ["noisy image"] and flagged.quality_components["noise"] == 1.0
    assert flagged.quality["threshold"] == 0.9
    assert Scan.objects.get(pk=noisy.pk).status == Scan.Status.ANALYSED  # flagged, still read


def test_running_twice_keeps_one_prediction(fake_model):
    scan = queued_scan()
    services.prediction_run(scan_id=scan.pk)
    assert services.prediction_run(scan_id=scan.pk) is None  # not queued any more: not claimable
    # A redelivered message after the scan was re-queued finds the existing reading.
    Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.QUEUED)
    again = services.prediction_run(scan_id=scan.pk)
    assert Prediction.objects.filter(scan=scan).count() == 1
    assert again is not None and fake_model.batches == [1]  # the model ran once
    scan.refresh_from_db()
    assert scan.status == Scan.Status.ANALYSED


def test_scan_running_elsewhere_is_not_claimed_until_stale(fake_model, settings):
    scan = ScanFactory(status=Scan.Status.RUNNING)
    assert services.prediction_run(scan_id=scan.pk) is None
    age(scan, int(settings.OCT_INFERENCE_STALE_AFTER.total_seconds()) + 5)
    assert services.prediction_run(scan_id=scan.pk) is not None


def test_scan_not_queued_is_left_alone(fake_model):
    scan = ScanFactory(status=Scan.Status.RECEIVED)
    assert services.prediction_run(scan_id=scan.pk) is None
    scan.refresh_from_db()
    assert scan.status == Scan.Status.RECEIVED


def test_gate_rejection_fails_scan_with_reason_and_keeps_audit_row(fake_model):
    scan = queued_scan(data=png_bytes(64, 40))
    services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == Scan.Status.FAILED
    assert "not accepted as a retinal OCT B-scan" in scan.status_detail
    assert "mostly colour" in scan.status_detail
    p = Prediction.objects.get(scan=scan)
    assert not p.gate_passed and p.predicted == "" and p.urgency == "" and not p.heatmap


def test_unreadable_image_fails_scan_without_prediction(fake_model):
    scan = queued_scan(data=b"this is not an image at all")
    assert services.prediction_run(scan_id=scan.pk) is None
    scan.refresh_from_db()
    assert scan.status == Scan.Status.FAILED
    assert scan.status_detail == services.MSG_UNREADABLE
    assert not Prediction.objects.filter(scan=scan).exists()


def test_runtime_unreadable_error_fails_scan(fake_model):
    scan = queued_scan(data=png_bytes(66, 40))
    services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    assert (scan.status, scan.status_detail) == (Scan.Status.FAILED, services.MSG_UNREADABLE)


def test_missing_image_file_fails_scan(fake_model):
    scan = queued_scan()
    scan.image.storage.delete(scan.image.name)
    services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    assert (scan.status, scan.status_detail) == (Scan.Status.FAILED, services.MSG_MISSING)


def test_model_error_fails_only_that_scan_of_a_batch(fake_model, caplog):
    good = [queued_scan() for _ in range(2)]
    bad = queued_scan(data=png_bytes(65, 40))
    with caplog.at_level(logging.INFO, logger="inference.services"):
        analysed = services.predict_scans(scan_ids=[good[0].pk, bad.pk, good[1].pk])
    assert analysed == 2
    bad.refresh_from_db()
    assert bad.status == Scan.Status.FAILED and f"scan id {bad.pk}" in bad.status_detail
    assert all(Scan.objects.get(pk=s.pk).status == Scan.Status.ANALYSED for s in good)
    # Logs carry ids, never file names or patient identifiers.
    assert bad.case.patient.identifier not in caplog.text and bad.original_name not in caplog.text


def test_predict_scans_runs_in_batches_of_setting(fake_model, settings):
    settings.OCT_INFERENCE_BATCH_SIZE = 2
    scans = [queued_scan() for _ in range(5)]
    done = ScanFactory(status=Scan.Status.ANALYSED)
    assert services.predict_scans(scan_ids=[s.pk for s in scans] + [done.pk, scans[0].pk]) == 5
    assert fake_model.batches == [2, 2, 1]
    assert Prediction.objects.count() == 5


def test_duplicate_prediction_from_a_racing_run_is_absorbed(fake_model):
    scan = queued_scan()
    first = services.prediction_run(scan_id=scan.pk)
    duplicate = Prediction(
        scan=scan, model_version=first.model_version, p_cnv=0.1, p_dme=0.1, p_drusen=0.1, p_normal=0.7,
        predicted="NORMAL", confidence=0.7, urgency="observation", oct_score=0.9, gate_passed=True, inference_ms=1,
    )
    stored = services.run._finish(scan.pk, prediction=duplicate, failure="")
    assert stored.pk == first.pk
    assert Prediction.objects.filter(scan=scan).count() == 1


def test_a_batch_racing_another_run_keeps_one_prediction_per_scan(fake_model, monkeypatch):
    """Another run stores a reading of one of the batch's scans while the batch is read:
    the batch's savepoint rolls back and its readings are stored one by one, keeping theirs."""
    scans = [queued_scan() for _ in range(3)]
    real = services.run._prediction_from
    theirs = {}

    def racing(scan_id, version, reading):
        if scan_id == scans[1].pk:
            theirs["p"] = Prediction.objects.create(
                scan_id=scan_id, model_version=version, p_cnv=0.1, p_dme=0.1, p_drusen=0.1, p_normal=0.7,
                predicted="NORMAL", confidence=0.7, urgency="observation", oct_score=0.9, gate_passed=True,
                inference_ms=1)
        return real(scan_id, version, reading)

    monkeypatch.setattr(services.run, "_prediction_from", racing)
    assert services.predict_scans(scan_ids=[s.pk for s in scans]) == 3
    assert sorted(Prediction.objects.values_list("scan_id", flat=True)) == sorted(s.pk for s in scans)
    assert Prediction.objects.get(scan=scans[1]).pk == theirs["p"].pk
    assert {Scan.objects.get(pk=s.pk).current_class for s in scans} == {"CNV", "NORMAL"}
    assert set(Scan.objects.filter(pk__in=[s.pk for s in scans]).values_list("status", flat=True)) == {"analysed"}


# --- enqueueing and the sweep -------------------------------------------------------------


def test_request_analysis_enqueues_after_commit(fake_model, django_capture_on_commit_callbacks):
    scan = ScanFactory()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            services.scan_request_analysis(scan=scan)
            assert Scan.objects.get(pk=scan.pk).status == Scan.Status.QUEUED
    assert len(callbacks) == 1
    scan.refresh_from_db()
    assert scan.status == Scan.Status.ANALYSED  # eager tasks: ran in process


def test_a_volumes_scans_are_requested_as_model_batches_after_commit(fake_model, settings, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    from inference import tasks

    settings.OCT_INFERENCE_BATCH_SIZE = 2
    scans = [ScanFactory() for _ in range(5)]
    published = []
    monkeypatch.setattr(tasks.predict_batch, "apply_async", lambda args, **kw: published.append(args[0]))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            services.scans_request_analysis(scan_ids=[s.pk for s in scans])
            assert set(Scan.objects.values_list("status", flat=True)) == {Scan.Status.QUEUED}
            assert published == []  # nothing before the commit
    assert len(callbacks) == 1
    ids = [s.pk for s in scans]
    assert published == [ids[0:2], ids[2:4], ids[4:5]]  # one task per batch, in slice order


@pytest.mark.parametrize("count,size,sizes", [(49, 16, [13, 12, 12, 12]), (5, 2, [2, 2, 1]), (16, 16, [16]),
                                              (17, 16, [9, 8]), (97, 16, [14, 14, 14, 14, 14, 14, 13]), (0, 16, [])])
def test_a_long_list_is_cut_into_as_few_batches_of_even_sizes(count, size, sizes):
    ids = list(range(100, 100 + count))
    batches = services.run.batches_of(ids, size)
    assert [len(b) for b in batches] == sizes and [i for b in batches for i in b] == ids  # in order


def test_a_batch_stores_every_reading_and_copies_it_onto_its_scan(fake_model):
    scans = [queued_scan() for _ in range(3)]
    assert services.predict_scans(scan_ids=[s.pk for s in scans]) == 3
    for scan in scans:
        scan.refresh_from_db()
        assert scan.status == Scan.Status.ANALYSED and scan.current_class == "CNV" and scan.current_urgent
    assert Prediction.objects.filter(scan__in=scans).count() == 3


def test_broker_down_at_enqueue_keeps_scan_queued_and_sweep_recovers(
    fake_model, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    from inference import tasks

    def broker_down(*args, **kwargs):
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(tasks.predict_scan, "apply_async", broker_down)
    scan = ScanFactory()
    with caplog.at_level(logging.WARNING, logger="inference.services"):
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                services.scan_request_analysis(scan=scan)  # the upload's transaction: must not raise
    scan.refresh_from_db()
    assert scan.status == Scan.Status.QUEUED
    assert str(scan.pk) in caplog.text and "sweep" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr("inference.services.run.get_model", lambda: fake_model)

    assert services.stale_scans_requeue() == 0  # not stale yet
    age(scan, 3600)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.stale_scans_requeue() == 1
    scan.refresh_from_db()
    assert scan.status == Scan.Status.ANALYSED


def test_sweep_requeues_stale_running_and_gives_up_after_max_attempts(fake_model, settings, django_capture_on_commit_callbacks):
    settings.OCT_INFERENCE_MAX_ATTEMPTS = 3
    stuck = ScanFactory(status=Scan.Status.RUNNING, analysis_attempts=1)
    poison = ScanFactory(status=Scan.Status.RUNNING, analysis_attempts=3)
    fresh = ScanFactory(status=Scan.Status.RUNNING, analysis_attempts=1)
    age(stuck, 3600)
    age(poison, 3600)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.stale_scans_requeue(older_than=timedelta(minutes=5)) == 1
    stuck.refresh_from_db(), poison.refresh_from_db(), fresh.refresh_from_db()
    assert stuck.status == Scan.Status.ANALYSED
    assert poison.status == Scan.Status.FAILED and "3 attempts" in poison.status_detail
    assert fresh.status == Scan.Status.RUNNING


# --- re-run ------------------------------------------------------------------------------


def test_rerun_same_version_after_success_is_refused(fake_model, clinician):
    scan = queued_scan()
    services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    with pytest.raises(Conflict, match="already been read by the active model"):
        services.scan_rerun(scan=scan, user=clinician)
    assert Prediction.objects.filter(scan=scan).count() == 1


def test_rerun_after_failure_requeues_and_replaces_the_failed_reading(fake_model, clinician, django_capture_on_commit_callbacks):
    scan = queued_scan(data=png_bytes(64, 40))
    services.prediction_run(scan_id=scan.pk)
    rejected = Prediction.objects.get(scan=scan)
    scan.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        services.scan_rerun(scan=scan, user=clinician)
    assert not Prediction.objects.filter(pk=rejected.pk).exists()
    scan.refresh_from_db()
    assert scan.status == Scan.Status.QUEUED and scan.status_detail == ""


def test_rerun_on_a_new_active_version_adds_a_prediction(fake_model, clinician, monkeypatch, django_capture_on_commit_callbacks):
    scan = queued_scan()
    services.prediction_run(scan_id=scan.pk)
    newer = FakeModel(version="0.1-test", predicted="DRUSEN")
    services.model_version_register(name=newer.name, version=newer.version, sha256=newer.sha256, activate=True)
    monkeypatch.setattr("inference.services.run.get_model", lambda: newer)
    scan.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        services.scan_rerun(scan=scan, user=clinician)
    scan.refresh_from_db()
    assert scan.status == Scan.Status.ANALYSED
    assert sorted(scan.predictions.values_list("predicted", flat=True)) == ["CNV", "DRUSEN"]


def test_rerun_refused_while_queued_and_for_graders(fake_model, clinician, grader_t2):
    scan = queued_scan()
    with pytest.raises(Conflict, match="already queued"):
        services.scan_rerun(scan=scan, user=clinician)
    with pytest.raises(Forbidden):
        services.scan_rerun(scan=scan, user=grader_t2)


# --- model versions ------------------------------------------------------------------------


def test_register_is_idempotent_and_refuses_a_changed_file():
    row, created = services.model_version_register(name="octnet", version="1.0", sha256="a" * 64, card={"metrics": {"f1": 0.9}})
    again, created_again = services.model_version_register(name="octnet", version="1.0", sha256="a" * 64)
    assert created and not created_again and row.pk == again.pk
    assert row.is_active and row.metrics == {"f1": 0.9}
    with pytest.raises(services.ModelMismatch):
        services.model_version_register(name="octnet", version="1.0", sha256="b" * 64)


def test_activating_a_version_deactivates_the_others():
    a, _ = services.model_version_register(name="octnet", version="1.0", sha256="a" * 64)
    b, _ = services.model_version_register(name="octnet", version="1.1", sha256="b" * 64)
    assert not b.is_active  # a new version does not silently take over
    services.model_version_activate(model_version=b)
    assert list(ModelVersion.objects.filter(is_active=True)) == [b]


# --- the real shipped model ------------------------------------------------------------------


def test_real_model_reads_a_real_bscan(oct_data):
    model = real_model_or_skip()
    path = next(p for p in sorted((oct_data / "kermany").rglob("*.jp*g")))
    scan = queued_scan(data=path.read_bytes(), original_name="x.jpeg", format="JPEG")
    prediction = services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == Scan.Status.ANALYSED, scan.status_detail
    assert prediction.model_version.sha256 == model.sha256
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert prediction.predicted in {"CNV", "DME", "DRUSEN", "NORMAL"} and prediction.gate_passed
    assert 0.0 <= prediction.quality_score <= 1.0 and set(prediction.quality_components) == {
        "noise", "contrast", "pit", "uncertainty", "gate"}
    assert prediction.low_confidence == (prediction.quality_score >= model.quality_cfg["threshold"])
    # Drawn on demand from the stored grid: the very overlay rendering it at reading time gave.
    with scan.image.open("rb") as fh:
        image = Image.open(io.BytesIO(fh.read()))
        image.load()
    reading = model.predict_images([image])[0]
    png = services.prediction_heatmap_png(prediction=Prediction.objects.get(pk=prediction.pk))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == heatmap_overlay_png(image, reading.heatmap)
    assert prediction.heatmap.storage.exists(prediction.heatmap.name)


def test_real_model_batch_matches_single_reads(oct_data, settings):
    real_model_or_skip()
    settings.OCT_INFERENCE_BATCH_SIZE = 4
    paths = sorted((oct_data / "kermany").rglob("*.jp*g"))[:3]
    scans = [queued_scan(data=p.read_bytes(), format="JPEG") for p in paths]
    assert services.predict_scans(scan_ids=[s.pk for s in scans]) == 3
    for scan, path in zip(scans, paths, strict=True):
        from inference.runtime import decode_image
        from inference.services import get_model

        single = get_model().predict_images([decode_image(path.read_bytes())])[0]
        stored = Prediction.objects.get(scan=scan)
        assert stored.predicted == single.predicted
        assert stored.confidence == pytest.approx(single.confidence, abs=1e-4)


def test_real_model_gate_rejects_a_non_oct_image():
    real_model_or_skip()
    scan = queued_scan(data=png_bytes(320, 240, mode="RGB"))
    services.prediction_run(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == Scan.Status.FAILED
    assert scan.status_detail


def test_prediction_run_takes_waiting_scans_along_in_one_batch(fake_model, settings):
    settings.OCT_INFERENCE_BATCH_SIZE = 3
    scans = [queued_scan() for _ in range(4)]
    services.prediction_run(scan_id=scans[2].pk)
    assert fake_model.batches == [3]
    statuses = [Scan.objects.get(pk=s.pk).status for s in scans]
    assert statuses.count(Scan.Status.ANALYSED) == 3 and Scan.objects.get(pk=scans[2].pk).status == Scan.Status.ANALYSED
    # The messages of the scans taken along find nothing left to do.
    for s in scans:
        if Scan.objects.get(pk=s.pk).status == Scan.Status.ANALYSED and s.pk != scans[2].pk:
            assert services.prediction_run(scan_id=s.pk) is None
    assert Prediction.objects.count() == 3


def test_commands_register_the_model_and_requeue_stale_scans(fake_model, monkeypatch, django_capture_on_commit_callbacks):
    import io

    from django.core.management import call_command

    monkeypatch.setattr("inference.runtime.load_model", lambda path=None, **kw: fake_model, raising=False)
    out = io.StringIO()
    call_command("register_model", stdout=out)
    call_command("register_model", stdout=out)
    assert "fake-octnet v0.0-test registered (active)" in out.getvalue()
    assert "already registered (active)" in out.getvalue()
    assert ModelVersion.objects.get().sha256 == fake_model.sha256

    scan = queued_scan()
    age(scan, 3600)
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_stale_scans", "--older-than", "60", stdout=out)
    assert "re-enqueued 1 scan(s)" in out.getvalue()
    assert Scan.objects.get(pk=scan.pk).status == Scan.Status.ANALYSED


def test_register_stores_a_card_with_nan_metrics():
    row, _ = services.model_version_register(
        name="octnet", version="9", sha256="c" * 64, card={"metrics": {"auc": float("nan"), "f1": 0.9}, "x": [float("inf")]}
    )
    row.refresh_from_db()
    assert row.metrics == {"auc": None, "f1": 0.9} and row.card["x"] == [None]
