"""The sweep has its own queue, consumed by every worker started without -Q."""
from __future__ import annotations

from octportal.celery import app


def test_the_sweep_is_routed_to_its_own_queue_and_readings_to_the_default_one():
    router = app.amqp.router
    assert router.route({}, "inference.tasks.sweep_stale_scans")["queue"].name == "sweep"
    for name in ("inference.tasks.predict_scan", "inference.tasks.predict_batch"):
        assert router.route({}, name)["queue"].name == "celery"


def test_a_plain_worker_consumes_both_queues():
    # `celery worker` without -Q consumes every queue in task_queues.
    assert set(app.amqp.queues) == {"celery", "sweep"}
