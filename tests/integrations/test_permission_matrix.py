"""Every /api/v1/ endpoint against every kind of caller: anonymous, a bad, expired or revoked
token, a read-only token writing, the wrong role, the right role, and a tier 2 grader
who has not graded yet (nothing blinded may leak)."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from cases.diagnoses import Diagnosis
from cases.models import Scan, Volume
from integrations import services as token_services
from integrations.models import ApiToken
from tests.factories import ScanFactory, VolumeFactory, bscan_bytes
from tests.inference.support import make_prediction
from verification import services as grading

pytestmark = pytest.mark.django_db

CLINIC = {"clinician", "admin"}
READERS = {"clinician", "t1", "t2", "t3", "admin"}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path)
    settings.VERIFICATION_READING_CENTRE_MODE = True
    return tmp_path


@pytest.fixture
def world(clinician, grader_t1, grader_t2, grader_t3, admin, no_role_user):
    # Not waiting for a reading (the report may be signed), and a re-run is allowed.
    scan = ScanFactory(source_label=Diagnosis.CNV, status=Scan.Status.FAILED)
    volume = Volume.objects.create(case=scan.case, source_format="ZIP", laterality="OD", slice_count=1,
                                   sha256="0" * 64, original_name="MRN-0042 Smith.zip")
    scan.volume, scan.slice_index = volume, 0
    scan.save(update_fields=["volume", "slice_index"])
    make_prediction(scan, predicted=Diagnosis.CNV)
    VolumeFactory(slice_count=2)  # an eye graded as one unit (the verification volume endpoints)
    users = {"clinician": clinician, "t1": grader_t1, "t2": grader_t2, "t3": grader_t3, "admin": admin,
             "norole": no_role_user}
    return scan, volume, users


# (method, path, who may, body) — "who may" are the roles answered 2xx.
def endpoints(scan, volume) -> list[tuple[str, str, set[str], object]]:
    case, patient = scan.case, scan.case.patient
    eye = Volume.objects.filter(slice_count__gt=1).get()
    return [
        ("get", "/api/v1/", READERS | {"norole"}, None),
        ("get", "/api/v1/patients/", CLINIC, None),
        ("get", f"/api/v1/patients/{patient.pk}/", CLINIC, None),
        ("get", "/api/v1/cases/", CLINIC, None),
        ("get", f"/api/v1/cases/{case.pk}/", CLINIC, None),
        ("get", "/api/v1/scans/", CLINIC, None),
        ("get", f"/api/v1/scans/{scan.pk}/", READERS, None),
        ("get", f"/api/v1/volumes/{volume.pk}/", READERS, None),
        ("get", f"/api/v1/volumes/{volume.pk}/reading/", READERS, None),
        ("get", f"/api/v1/scans/{scan.pk}/reading/", READERS - {"t2"}, None),  # t2 is blinded
        ("get", f"/api/v1/scans/{scan.pk}/prediction/", READERS - {"t2"}, None),
        ("get", "/api/v1/model-versions/", READERS, None),
        ("get", f"/api/v1/cases/{case.pk}/report.pdf", CLINIC, None),
        ("get", f"/api/v1/cases/{case.pk}/report/", CLINIC, None),
        ("get", "/api/v1/verification/exports/verified.csv", {"t3", "admin"}, None),
        ("get", "/api/v1/verification/exports/verified.zip", {"t3", "admin"}, None),
        ("get", "/api/v1/verification/statistics/", {"t3", "admin"}, None),
        ("get", "/api/v1/verification/worklist/1/", {"t1"}, None),
        ("get", "/api/v1/verification/worklist/2/", {"t2"}, None),
        ("get", "/api/v1/verification/worklist/3/", {"t3", "admin"}, None),
        ("get", f"/api/v1/verification/scans/{scan.pk}/", READERS, None),
        ("get", "/api/v1/verification/worklist/1/volumes/", {"t1"}, None),
        ("get", "/api/v1/verification/worklist/2/volumes/", {"t2"}, None),
        ("get", "/api/v1/verification/worklist/3/volumes/", {"t3", "admin"}, None),
        ("get", f"/api/v1/verification/volumes/{eye.pk}/", READERS, None),
        ("post", "/api/v1/patients/", CLINIC, {"identifier": "NEW-1"}),
        ("post", "/api/v1/cases/", CLINIC, {"patient": patient.pk, "eye": "OS", "exam_date": "2026-01-02"}),
        # Signed before the upload and the re-run below leave B-scans waiting for their reading.
        ("post", f"/api/v1/cases/{case.pk}/report/sign/", CLINIC, None),  # signs version 1
        ("post", f"/api/v1/cases/{case.pk}/scans/", CLINIC, "upload"),
        ("post", f"/api/v1/scans/{scan.pk}/rerun/", CLINIC, None),
        ("post", f"/api/v1/verification/scans/{scan.pk}/grades/", {"t1"}, {"tier": 1, "decision": "accept"}),
        ("post", f"/api/v1/verification/volumes/{eye.pk}/grades/", {"t1"}, {"tier": 1, "decision": "accept"}),
    ]


def call(client: APIClient, method: str, path: str, body):
    if body == "upload":
        files = [SimpleUploadedFile("b.png", bscan_bytes(seed=7))]
        return client.post(path, {"files": files}, format="multipart")
    return getattr(client, method)(path, body, format="json") if method == "post" else client.get(path)


def with_token(user, *, scope="write", state="active") -> APIClient:
    token, secret = token_services.token_create(user=user, name="matrix", scope=scope, days=5)
    if state == "expired":
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    elif state == "revoked":
        token_services.token_revoke(token_id=token.pk, by=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def assert_refusal(response, status: int, where: str) -> dict:
    assert response.status_code == status, (where, response.status_code, response.content[:200])
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], where
    return body


def test_anonymous_callers_are_refused_everywhere(world):
    scan, volume, _ = world
    for method, path, _, body in endpoints(scan, volume):
        assert_refusal(call(APIClient(), method, path, body), 403, f"{method} {path}")


@pytest.mark.parametrize("state, words", [("bad", "Invalid"), ("expired", "expired"), ("revoked", "revoked")])
def test_bad_expired_and_revoked_tokens_are_401_everywhere(world, state, words):
    scan, volume, users = world
    if state == "bad":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer oct_wrong")
    else:
        client = with_token(users["admin"], state=state)
    for method, path, _, body in endpoints(scan, volume):
        refusal = assert_refusal(call(client, method, path, body), 401, f"{method} {path}")
        assert words in refusal["detail"]


def test_read_only_tokens_read_but_never_write(world):
    scan, volume, users = world
    clients = {}
    for method, path, allowed, body in endpoints(scan, volume):
        who = sorted(allowed)[0]  # someone whose role allows it: the scope alone refuses
        client = clients.setdefault(who, with_token(users[who], scope="read"))
        response = call(client, method, path, body)
        if method == "get":
            assert response.status_code == 200, (path, response.content[:200])
        else:
            assert "read-only" in assert_refusal(response, 403, path)["detail"]


@pytest.mark.parametrize("who", ["clinician", "t1", "t2", "t3", "admin", "norole"])
def test_each_role_gets_exactly_its_endpoints(world, who):
    scan, volume, users = world
    client = with_token(users[who])
    for method, path, allowed, body in endpoints(scan, volume):
        response = call(client, method, path, body)
        if who in allowed:
            assert 200 <= response.status_code < 300, (who, method, path, response.content[:300])
        else:
            assert_refusal(response, 403, f"{who} {method} {path}")


def test_a_tier_2_grader_before_grading_sees_nothing_blinded(world, grader_t2b):
    scan, volume, users = world
    # Another tier 2 grader has graded already: that grade must not show either.
    grading.quality_submit(scan=scan, grader=users["t1"], accept=True)
    grading.grade_submit(scan=scan, grader=grader_t2b, label="DME",
                         findings={"cnv": False, "macular_edema": True, "drusen": False, "other": False}, confidence=3)
    client = with_token(users["t2"], scope="read")
    detail = client.get(f"/api/v1/scans/{scan.pk}/").json()
    assert detail["source_label"] is None and detail["original_name"] == scan.code and detail["original_url"] is None
    listed = client.get(f"/api/v1/volumes/{volume.pk}/").json()
    assert listed["original_name"] == ""
    reading = client.get(f"/api/v1/volumes/{volume.pk}/reading/").json()
    assert reading["reading"] is None and all("p_urgent" not in s or s["p_urgent"] is None for s in reading["slices"])
    assert client.get(f"/api/v1/scans/{scan.pk}/reading/").status_code == 403
    review = client.get(f"/api/v1/verification/scans/{scan.pk}/").json()
    assert review["reference"] is None and review["may_see_reference"] is False
    assert [g["tier"] for g in review["grades"]] == [1]
    worklist = client.get("/api/v1/verification/worklist/2/").json()
    assert [(i["id"], i["model_urgent"]) for i in worklist["results"]] == [(scan.pk, None)]
    # The report and the exports are not a tier 2 grader's: refused, and the refusal says nothing.
    refusals = [client.get(f"/api/v1/cases/{scan.case_id}/report/"),
                client.get(f"/api/v1/cases/{scan.case_id}/report.pdf"),
                client.get("/api/v1/verification/exports/verified.csv"),
                client.get("/api/v1/verification/exports/verified.zip")]
    assert [r.status_code for r in refusals] == [403] * 4
    writer = with_token(users["t2"])
    refusals.append(writer.post(f"/api/v1/cases/{scan.case_id}/report/sign/"))
    assert refusals[-1].status_code == 403 and not scan.case.report_versions.exists()
    text = str([detail, listed, reading, review, worklist, *(r.json() for r in refusals)])
    assert "CNV" not in text and "DME" not in text and "Smith" not in text
    assert scan.case.patient.identifier not in text
