"""/healthz and /readyz: JSON, 200/503, unauthenticated, nothing sensitive in the answer."""
from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage

from inference import health as inference_health
from inference import services
from inference.models import ModelVersion
from octportal import health


def _register_shipped_model() -> ModelVersion:
    path, name, version = inference_health.served_model()
    row, _ = services.model_version_register(
        name=name, version=version, sha256=inference_health.file_sha256(path), file_name=path.name, activate=True
    )
    return row


@pytest.fixture
def shipped_model_registered(db) -> ModelVersion:
    path, _, _ = inference_health.served_model()
    if not path.is_file():
        pytest.skip(f"the shipped model {path} is not in the checkout")
    return _register_shipped_model()


def test_healthz_answers_without_touching_the_database(client):
    # No db fixture: any query here would raise "Database access not allowed".
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_health_endpoints_answer_any_host_header(client, shipped_model_registered):
    # Probes connect by the container's IP, which ALLOWED_HOSTS does not list.
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/patients/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_readyz_is_ready_with_the_embedded_defaults(client, shipped_model_registered):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "storage", "model", "worker"}
    assert all(c["ok"] for c in body["checks"].values())
    assert body["checks"]["broker"]["status"].startswith("not configured")
    assert body["checks"]["model"]["status"] == f"ok ({shipped_model_registered.label})"


def test_readyz_is_anonymous_and_does_not_redirect_to_login(client, shipped_model_registered):
    response = client.get("/readyz/", follow=False)
    assert response.status_code == 200
    assert "sessionid" not in response.cookies


def test_health_endpoints_refuse_writes(client):
    assert client.post("/healthz").status_code == 405
    assert client.head("/healthz").status_code == 200


def test_readyz_fails_without_an_active_model_version(client, db):
    response = client.get("/readyz")
    assert response.status_code == 503
    model = response.json()["checks"]["model"]
    assert model == {"ok": False, "status": "no active model version registered (manage.py register_model)",
                     "ms": model["ms"]}


def test_readyz_fails_when_the_model_file_differs_from_the_active_version(client, shipped_model_registered):
    ModelVersion.objects.filter(pk=shipped_model_registered.pk).update(sha256="0" * 64)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["model"]["status"] == "model file hash differs from the active model version"
    assert body["checks"]["database"]["ok"]
    # The hashes themselves are not published.
    assert shipped_model_registered.sha256 not in response.content.decode()


def test_readyz_fails_when_the_model_file_is_missing(client, shipped_model_registered, settings, tmp_path):
    settings.OCT_MODEL_PATH = str(tmp_path / "gone.onnx")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["model"]["status"] == "model file missing"
    assert str(tmp_path) not in response.content.decode()


def test_readyz_reports_an_unreachable_broker_without_its_address_or_password(
    client, shipped_model_registered, settings
):
    from octportal.celery import app

    url = "redis://:sup3r-s3cret@127.0.0.1:9/0"  # port 9 (discard): nothing listens on loopback
    settings.CELERY_BROKER_URL = url
    settings.OCT_HEALTH_TIMEOUT_S = 0.5
    before = app.conf.broker_url
    app.conf.broker_url = url
    try:
        response = client.get("/readyz")
    finally:
        app.conf.broker_url = before
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["broker"] == {"ok": False, "status": "unavailable", "ms": body["checks"]["broker"]["ms"]}
    assert not body["checks"]["worker"]["ok"]
    assert body["checks"]["broker"]["ms"] + body["checks"]["worker"]["ms"] < 1500, "one attempt, no back-off"
    text = response.content.decode()
    assert "s3cret" not in text and "127.0.0.1" not in text and "redis" not in text.lower()


def test_readyz_fails_when_local_storage_is_not_writable(client, shipped_model_registered, settings, tmp_path,
                                                         monkeypatch):
    monkeypatch.setattr(health.os, "access", lambda path, mode: False)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"]["status"] == "not writable"


def test_readyz_payload_names_no_patient_data(client, shipped_model_registered):
    from tests.factories import ScanFactory

    scan = ScanFactory()
    text = client.get("/readyz").content.decode()
    assert scan.case.patient.identifier not in text and scan.image.name not in text
    assert json.loads(text)["status"] == "ok"
    assert default_storage.exists(scan.image.name)


def test_model_hash_is_cached_until_the_file_changes(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"one")
    first = inference_health.file_sha256(f)
    f.write_bytes(b"two!")
    assert inference_health.file_sha256(f) != first


def test_healthcheck_command_exits_non_zero_when_nothing_listens(monkeypatch):
    monkeypatch.setenv("OCT_HEALTH_PORT", "9")
    monkeypatch.setattr("sys.argv", ["health", "--ready"])
    assert health.main() == 1


def test_a_web_tier_can_leave_the_worker_out_of_readiness(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    settings.OCT_HEALTH_REQUIRE_WORKER = False
    healthy, results = health.run_checks({"worker": health.check_worker})
    assert healthy and results["worker"]["status"] == "not required"


def test_apps_register_their_own_checks():
    # The bottom layer knows no app: the model check comes from InferenceConfig.ready().
    assert health.READINESS_CHECKS["model"] is inference_health.check_model
