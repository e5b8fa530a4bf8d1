"""The REST API end to end with a real Celery worker on PostgreSQL and Redis.

A clinic's script holds a read-write token. It registers a patient and an examination,
uploads B-scans (multipart, 202), and a receiver on loopback (a webhook an admin
registered) is told of each reading by the worker process: ``reading.ready``, signed
with HMAC-SHA256. The script fetches each reading at its status URL, signs the report
through the API and is told again: ``report.signed``. Signing once more changes nothing
(409, no event). Every request goes over HTTP to the live server; every webhook is
POSTed by the worker, which shares the test database.

Needs what tests/integration/workers.py's fixtures need (PostgreSQL, Redis at
``CELERY_TEST_BROKER_URL``, the shipped model, the real images); skips with the reason
when one is missing, unless ``OCT_REQUIRE_SERVICES=1``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests

from cases.roles import Role
from integrations import services as token_services
from integrations.models import Delivery, Webhook
from tests.conftest import make_user
from tests.integration.workers import NEEDS_POSTGRES, ON_POSTGRES, wait_for
from tests.integrations.test_webhooks import Receiver
from verification.exports import patient_pseudonym

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ON_POSTGRES, reason=NEEDS_POSTGRES),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("groups_after_flush"),
]

SECRET = "e2e-webhook-secret"
# The worker computes the pseudonyms of reading.ready, the live server those of
# report.signed: both with this key.
EXPORT_KEY = "e2e-export-key"
IDENTIFIER = "MRN-E2E-4711"


def verified(received: dict) -> dict:
    """The event of a received POST, after checking its signature as a receiver must."""
    expected = "sha256=" + hmac.new(SECRET.encode(), received["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received["headers"]["X-OCT-Signature"], expected), "bad signature"
    event = json.loads(received["body"])
    assert received["headers"]["X-OCT-Event"] == event["event"]
    assert received["headers"]["X-OCT-Delivery"] == event["id"]
    assert IDENTIFIER not in received["body"].decode(), "the identifier reached a webhook body"
    return event


def events(receiver: Receiver, name: str) -> list[dict]:
    return [e for e in (verified(r) for r in list(receiver.received)) if e["event"] == name]


@pytest.fixture
def receiver():
    r = Receiver([])
    yield r
    r.close()


def test_a_token_script_uploads_is_told_of_each_reading_and_signs_the_report(
    postgres, model_available, images, broker_url, publish_to, worker_factory, live_url, receiver, settings
):
    settings.VERIFICATION_EXPORT_KEY = EXPORT_KEY
    publish_to(broker_url)
    worker = worker_factory(broker_url, VERIFICATION_EXPORT_KEY=EXPORT_KEY)
    worker.start()
    hook = Webhook(name="ris", url=receiver.url, secret=SECRET, events=["reading.ready", "report.signed"])
    hook.full_clean()
    hook.save()
    clinician = make_user("e2e-clinician", Role.CLINICIAN)
    _, secret = token_services.token_create(user=clinician, name="e2e script", scope="write", days=1)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {secret}"
    base = live_url + "/api/v1/"

    patient = api.post(base + "patients/", json={"identifier": IDENTIFIER}, timeout=30)
    assert patient.status_code == 201, patient.text
    exam = {"patient": patient.json()["id"], "eye": "OD", "exam_date": "2026-03-02"}
    case = api.post(base + "cases/", json=exam, timeout=30).json()
    files = [("files", (f"od-{i}.jpeg", data, "image/jpeg")) for i, data in enumerate(images[:2])]
    started = time.monotonic()
    upload = api.post(base + f"cases/{case['id']}/scans/", files=files, timeout=60)
    assert upload.status_code == 202, upload.text
    accepted = upload.json()["accepted"]
    assert len(accepted) == 2 and upload.json()["rejected"] == []

    # The worker reads both scans and POSTs reading.ready for each, signed.
    wait_for(lambda: len(events(receiver, "reading.ready")) == 2, timeout=180, interval=0.2,
             what=f"two reading.ready webhooks (received {len(receiver.received)}; log {worker.log})")
    told_after = time.monotonic() - started
    readings = {e["data"]["scan"]: e["data"] for e in events(receiver, "reading.ready")}
    assert set(readings) == {s["id"] for s in accepted}
    pseudonym = patient_pseudonym(IDENTIFIER)
    for data in readings.values():
        assert data["case"] == case["id"] and data["eye"] == "OD" and data["patient_pseudonym"] == pseudonym
    log = worker.text()
    assert log.count("Task inference.tasks.predict_") >= 1, "the worker process read the scans"
    assert log.count("Task integrations.tasks.webhook_deliver[") >= 2, "the worker process POSTed the webhooks"

    # The reading at each scan's status URL is the one the webhook told of.
    for scan in accepted:
        reading = api.get(live_url + scan["reading_url"], timeout=30)
        assert reading.status_code == 200, reading.text
        prediction, told = reading.json()["prediction"], readings[scan["id"]]
        assert prediction["predicted"] == told["predicted"] and prediction["urgency"] == told["urgency"]
        assert prediction["confidence"] == pytest.approx(told["confidence"])
        model = prediction["model_version"]
        assert told["model_version"] == f"{model['name']} v{model['version']}"  # ModelVersion.label

    # Sign the report through the API; the receiver is told.
    state = api.get(base + f"cases/{case['id']}/report/", timeout=30).json()
    assert (state["status"], state["may_sign"]) == ("unsigned", True)
    signed = api.post(live_url + state["sign_url"], timeout=120)
    assert signed.status_code == 201, signed.text
    version = signed.json()
    assert version["number"] == 1 and version["signed_by"] == clinician.username
    wait_for(lambda: len(events(receiver, "report.signed")) == 1, timeout=60, interval=0.2,
             what=f"the report.signed webhook (log {worker.log})")
    [told] = events(receiver, "report.signed")
    assert told["data"] == {**told["data"], "case": case["id"], "report_version": 1, "patient_pseudonym": pseudonym}
    pdf = api.get(live_url + version["pdf_url"], timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert api.get(base + f"cases/{case['id']}/report/", timeout=30).json()["status"] == "signed"

    # Nothing changed since: refused in the one dialect, and no event.
    again = api.post(live_url + state["sign_url"], timeout=60)
    assert again.status_code == 409 and "nothing has changed" in again.json()["detail"]
    assert Delivery.objects.filter(event="report.signed").count() == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.DELIVERED}
    print(f"upload to both reading.ready webhooks: {told_after:.1f} s")
