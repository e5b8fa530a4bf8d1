"""Webhooks: signed POSTs to a receiver on loopback, retried with backoff, every delivery recorded,
no patient identifier in a body (only the exports' keyed pseudonym)."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from cases.diagnoses import Diagnosis
from cases.models import Scan
from integrations import webhooks
from integrations.models import Delivery, Webhook
from tests.factories import ScanFactory
from tests.inference.support import make_prediction
from verification import reports, services as grading
from verification.exports import patient_pseudonym

pytestmark = pytest.mark.django_db
SECRET = "s3cret-for-tests"
NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next status of ``plan``."""

    def __init__(self, plan: list[int]) -> None:
        self.plan = list(plan)
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": self.headers, "body": body})
                self.send_response(receiver.plan.pop(0) if receiver.plan else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def start(plan: list[int] | None = None) -> Receiver:
        r = Receiver(plan or [])
        Webhook.objects.create(name="ris", url=r.url, secret=SECRET)
        made.append(r)
        return r

    yield start
    for r in made:
        r.close()


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)


def verify(received: dict) -> dict:
    expected = "sha256=" + hmac.new(SECRET.encode(), received["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received["headers"]["X-OCT-Signature"], expected)
    return json.loads(received["body"])


def test_a_reading_is_posted_signed_with_a_pseudonym_only(receiver, django_capture_on_commit_callbacks):
    r = receiver()
    scan = ScanFactory()
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction(scan, predicted=Diagnosis.CNV)
    [sent] = r.received
    body = verify(sent)
    assert body["event"] == "reading.ready" and sent["headers"]["X-OCT-Event"] == "reading.ready"
    data = body["data"]
    assert data["scan"] == scan.pk and data["predicted"] == "CNV" and data["urgency"]
    assert data["low_confidence"] is False and data["quality_score"] == 0.12 and data["quality_reasons"] == []
    assert data["patient_pseudonym"] == patient_pseudonym(scan.case.patient.identifier)
    assert scan.case.patient.identifier not in sent["body"].decode() and scan.original_name not in sent["body"].decode()
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.DELIVERED and delivery.attempts == 1 and delivery.response_status == 200


def test_a_failing_receiver_is_retried_and_each_attempt_recorded(receiver, django_capture_on_commit_callbacks):
    r = receiver(plan=[500, 503, 200])
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction(ScanFactory())
    assert len(r.received) == 3
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.DELIVERED and delivery.attempts == 3
    assert [h["status"] for h in delivery.history] == [500, 503, 200]
    # The same body each time (one event, one id), each signed.
    assert len({verify(x)["id"] for x in r.received}) == 1


def test_a_receiver_that_never_answers_2xx_is_given_up_on(receiver, django_capture_on_commit_callbacks):
    r = receiver(plan=[500] * 10)
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction(ScanFactory())
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.FAILED and delivery.attempts == webhooks.MAX_ATTEMPTS
    assert len(r.received) == webhooks.MAX_ATTEMPTS


def test_an_unreachable_receiver_is_recorded(django_capture_on_commit_callbacks):
    Webhook.objects.create(name="down", url="http://127.0.0.1:9/hook", secret=SECRET)
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction(ScanFactory())
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.FAILED and delivery.error and delivery.response_status is None


def test_verified_scans_and_signed_reports_are_posted(receiver, django_capture_on_commit_callbacks,
                                                      clinician, grader_t1, grader_t2, grader_t2b, grader_t3):
    r = receiver()
    Webhook.objects.update(events=["scan.verified", "report.signed"])
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    with django_capture_on_commit_callbacks(execute=True):
        grading.quality_submit(scan=scan, grader=grader_t1, accept=True)
        grading.grade_submit(scan=scan, grader=grader_t2, label="DME", findings=NO_FINDINGS, confidence=3)
        grading.grade_submit(scan=scan, grader=grader_t2b, label="CNV", findings=NO_FINDINGS, confidence=3)
        grading.verify_submit(scan=scan, grader=grader_t3, final_label="CNV")
    with django_capture_on_commit_callbacks(execute=True):
        reports.report_sign(case=scan.case, user=clinician)
    events = [verify(x) for x in r.received]
    assert [e["event"] for e in events] == ["scan.verified", "report.signed"]
    assert events[0]["data"]["final_label"] == "CNV"
    assert events[1]["data"]["report_version"] == 1 and events[1]["data"]["case"] == scan.case_id
    assert all(scan.case.patient.identifier not in x["body"].decode() for x in r.received)


def test_a_report_signed_on_the_page_or_through_the_api_is_posted_once_each(
    receiver, django_capture_on_commit_callbacks, client, api_client, clinician
):
    r = receiver()
    Webhook.objects.update(events=["report.signed"])
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    client.force_login(clinician)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(reverse("cases:case_report_sign", args=[scan.case_id])).status_code == 302
    make_prediction(scan)  # a new reading: the signed version is outdated
    api_client.force_authenticate(clinician)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_client.post(f"/api/v1/cases/{scan.case_id}/report/sign/").status_code == 201
    with django_capture_on_commit_callbacks(execute=True):
        assert api_client.post(f"/api/v1/cases/{scan.case_id}/report/sign/").status_code == 409  # no event
    events = [verify(x) for x in r.received]
    assert [(e["event"], e["data"]["report_version"]) for e in events] == [("report.signed", 1), ("report.signed", 2)]
    assert events[1]["data"]["patient_pseudonym"] == patient_pseudonym(scan.case.patient.identifier)
    assert all(scan.case.patient.identifier not in x["body"].decode() for x in r.received)


def test_an_inactive_webhook_or_another_event_gets_nothing(receiver, django_capture_on_commit_callbacks):
    r = receiver()
    Webhook.objects.update(events=["report.signed"])
    Webhook.objects.create(name="off", url=r.url, secret=SECRET, is_active=False)
    with django_capture_on_commit_callbacks(execute=True):
        make_prediction(ScanFactory())
    assert r.received == [] and not Delivery.objects.exists()
