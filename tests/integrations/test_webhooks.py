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
from tests.factories import ScanFactory, VolumeFactory
from tests.inference.support import make_prediction
from verification import reports, services as grading
from verification.exports import patient_pseudonym
from verification.models import Grade, Review

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


# --- volume.verified: a volume reviewed as one unit (one eye) ------------------------------------


def verify_volume(volume, t1, t2s, t3, *, label="CNV", keys=((3, 1), (1, 4))) -> None:
    grading.quality_submit(volume=volume, grader=t1, accept=True)
    for grader, key in zip(t2s, keys):
        grading.grade_submit(volume=volume, grader=grader, label=label, findings=NO_FINDINGS, confidence=4,
                             key_slices=list(key))
    grading.verify_submit(volume=volume, grader=t3, final_label=label)


def test_a_verified_volume_is_posted_once_as_the_eye_with_its_key_bscans(
    receiver, django_capture_on_commit_callbacks, grader_t1, grader_t2, grader_t2b, grader_t3
):
    r = receiver()  # registered with the default events: every event, volume.verified included
    volume = VolumeFactory(slice_count=5)
    with django_capture_on_commit_callbacks(execute=True):
        verify_volume(volume, grader_t1, [grader_t2, grader_t2b], grader_t3)
    [sent] = r.received  # one event for the eye: no scan.verified for its B-scans
    body = verify(sent)
    assert body["event"] == "volume.verified" and sent["headers"]["X-OCT-Event"] == "volume.verified"
    review = Review.objects.get(volume=volume)
    slices = {s.slice_index: s for s in volume.scans.all()}
    assert body["data"] == {
        "volume": volume.pk,
        "case": volume.case_id,
        "eye": "OD",
        "slice_count": 5,
        "patient_pseudonym": patient_pseudonym(volume.case.patient.identifier),
        "final_label": "CNV",
        "verified_at": review.verified_at.isoformat(),
        "key_slices": [{"slice_index": i, "scan": slices[i].pk, "scan_code": slices[i].code} for i in (1, 3, 4)],
    }
    text = sent["body"].decode()
    assert volume.case.patient.identifier not in text and volume.original_name not in text
    assert all(s.original_name not in text for s in slices.values())
    delivery = Delivery.objects.get()
    assert delivery.event == "volume.verified" and delivery.status == Delivery.Status.DELIVERED


def test_a_volume_event_is_retried_like_the_others_and_a_tier3_correction_is_posted_again(
    receiver, django_capture_on_commit_callbacks, grader_t1, grader_t2, grader_t2b, grader_t3
):
    r = receiver(plan=[503, 200])
    Webhook.objects.update(events=["volume.verified"])
    volume = VolumeFactory(slice_count=3)
    with django_capture_on_commit_callbacks(execute=True):
        verify_volume(volume, grader_t1, [grader_t2, grader_t2b], grader_t3, label="DME", keys=((), ()))
    assert len(r.received) == 2 and len({verify(x)["id"] for x in r.received}) == 1
    first = Delivery.objects.get()
    assert first.status == Delivery.Status.DELIVERED and [h["status"] for h in first.history] == [503, 200]
    assert verify(r.received[0])["data"]["key_slices"] == []
    tier3 = Grade.objects.get(volume=volume, tier=3)
    with django_capture_on_commit_callbacks(execute=True):
        grading.grade_correct(grade=tier3, grader=grader_t3, label="CNV")
    events = [verify(x) for x in r.received[2:]]
    assert [(e["event"], e["data"]["final_label"]) for e in events] == [("volume.verified", "CNV")]
    assert Delivery.objects.filter(event="volume.verified").count() == 2


def test_a_webhook_for_scan_events_only_is_not_told_of_volumes(
    receiver, django_capture_on_commit_callbacks, grader_t1, grader_t2, grader_t2b, grader_t3
):
    r = receiver()
    Webhook.objects.update(events=["scan.verified"])
    with django_capture_on_commit_callbacks(execute=True):
        verify_volume(VolumeFactory(slice_count=5), grader_t1, [grader_t2, grader_t2b], grader_t3)
    assert r.received == [] and not Delivery.objects.exists()


def test_volume_verified_is_an_event_an_admin_may_register():
    hook = Webhook(name="ris", url="https://ris.example.org/hook", secret=SECRET, events=["volume.verified"])
    hook.full_clean()
    assert "volume.verified" in Webhook(name="new", url="https://x.example.org/", secret=SECRET).events
