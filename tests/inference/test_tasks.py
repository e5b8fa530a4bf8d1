"""Celery tasks: thin, ids only, retry transient errors with backoff, never model errors."""
from __future__ import annotations

import pytest
from django.db import OperationalError

from cases.models import Scan
from inference import services, tasks
from tests.factories import ScanFactory
from tests.inference.support import fake_model, png_bytes  # noqa: F401

pytestmark = pytest.mark.django_db


def test_tasks_are_late_acked_rejected_on_worker_loss_and_time_limited():
    for task in (tasks.predict_scan, tasks.predict_batch):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert task.time_limit and task.soft_time_limit and task.soft_time_limit < task.time_limit
        assert task.max_retries == tasks.MAX_RETRIES
    assert tasks.sweep_stale_scans.time_limit


def test_predict_scan_runs_the_service(fake_model):
    scan = ScanFactory(status=Scan.Status.QUEUED)
    result = tasks.predict_scan.apply(args=[scan.pk])
    assert result.successful()
    assert Scan.objects.get(pk=scan.pk).status == Scan.Status.ANALYSED


def test_transient_database_error_is_retried_then_succeeds(fake_model, monkeypatch):
    scan = ScanFactory(status=Scan.Status.QUEUED)
    real = services.prediction_run
    calls = []

    def flaky(*, scan_id):
        calls.append(scan_id)
        if len(calls) <= 2:
            services.run._claim([scan_id])  # fails after the claim: the retry must still get the scan
            raise OperationalError("server closed the connection unexpectedly")
        return real(scan_id=scan_id)

    monkeypatch.setattr(services, "prediction_run", flaky)
    monkeypatch.setattr(tasks, "retry_countdown", lambda retries: 0)
    result = tasks.predict_scan.apply(args=[scan.pk])
    assert result.successful(), result.traceback
    assert len(calls) == 3
    assert Scan.objects.get(pk=scan.pk).status == Scan.Status.ANALYSED


def test_persistent_transient_error_gives_up_after_max_retries_leaving_scan_queued(fake_model, monkeypatch):
    scan = ScanFactory(status=Scan.Status.QUEUED)
    calls = []

    def down(*, scan_id):
        calls.append(scan_id)
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(services, "prediction_run", down)
    monkeypatch.setattr(tasks, "retry_countdown", lambda retries: 0)
    result = tasks.predict_scan.apply(args=[scan.pk])
    assert result.failed()
    assert len(calls) == tasks.MAX_RETRIES + 1
    assert Scan.objects.get(pk=scan.pk).status == Scan.Status.QUEUED  # the sweep takes it from here


def test_deterministic_model_error_is_not_retried(fake_model, monkeypatch):
    scan = ScanFactory(status=Scan.Status.QUEUED, data=png_bytes(65, 40))  # the fake model raises
    retried = []
    monkeypatch.setattr(tasks.predict_scan, "retry", lambda *a, **k: retried.append(1))
    result = tasks.predict_scan.apply(args=[scan.pk])
    assert result.successful() and not retried
    scan.refresh_from_db()
    assert scan.status == Scan.Status.FAILED and "internal error" in scan.status_detail


def test_unexpected_error_is_not_retried(monkeypatch):
    scan = ScanFactory(status=Scan.Status.QUEUED)
    calls = []

    def bug(*, scan_id):
        calls.append(scan_id)
        raise ValueError("a bug")

    monkeypatch.setattr(services, "prediction_run", bug)
    result = tasks.predict_scan.apply(args=[scan.pk])
    assert result.failed() and len(calls) == 1


def test_predict_batch_retries_transient_errors(fake_model, monkeypatch):
    scans = [ScanFactory(status=Scan.Status.QUEUED) for _ in range(3)]
    real = services.predict_scans
    calls = []

    def flaky(*, scan_ids):
        calls.append(scan_ids)
        if len(calls) == 1:
            raise OperationalError("deadlock detected")
        return real(scan_ids=scan_ids)

    monkeypatch.setattr(services, "predict_scans", flaky)
    monkeypatch.setattr(tasks, "retry_countdown", lambda retries: 0)
    result = tasks.predict_batch.apply(args=[[s.pk for s in scans]])
    assert result.successful() and result.result == 3 and len(calls) == 2


def test_backoff_grows_is_jittered_and_capped():
    for retries in range(8):
        values = {tasks.retry_countdown(retries) for _ in range(50)}
        cap = min(tasks.BACKOFF_MAX_S, tasks.BACKOFF_FACTOR_S * 2**retries)
        assert all(0 <= v <= cap for v in values)
    assert len({tasks.retry_countdown(6) for _ in range(50)}) > 1  # jitter


def test_sweep_task_requeues_stale_scans(monkeypatch):
    called = []
    monkeypatch.setattr(services, "stale_scans_requeue", lambda **kw: called.append(kw) or 7)
    assert tasks.sweep_stale_scans.apply().result == 7 and called


def test_beat_schedule_points_at_the_sweep(settings):
    from octportal.celery import app

    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "inference.tasks.sweep_stale_scans" in names
    assert "inference.tasks.sweep_stale_scans" in app.tasks
