"""API: permission matrix, grade submission, review state with blinding."""
from __future__ import annotations

import pytest
import requests
import schemathesis
from schemathesis.core.transport import Response

from cases.diagnoses import Diagnosis
from verification import services
from verification.models import Review
from tests.conftest import REPO_ROOT
from tests.factories import ScanFactory

from tests.inference.support import make_prediction

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}


@pytest.fixture
def users(clinician, grader_t1, grader_t2, grader_t3, admin, no_role_user):
    return {"clinician": clinician, "t1": grader_t1, "t2": grader_t2, "t3": grader_t3, "admin": admin, "norole": no_role_user}


GETS = [
    (lambda s: "/api/verification/worklist/1/", {"t1"}),
    (lambda s: "/api/verification/worklist/2/", {"t2"}),
    (lambda s: "/api/verification/worklist/3/", {"t3", "admin"}),
    (lambda s: f"/api/verification/scans/{s.pk}/", {"clinician", "t1", "t2", "t3", "admin"}),
]


@pytest.mark.parametrize("url,allowed", GETS)
def test_api_permission_matrix(api_client, users, scan, url, allowed):
    assert api_client.get(url(scan)).status_code in (401, 403)
    for key, user in users.items():
        api_client.force_authenticate(user)
        status = api_client.get(url(scan)).status_code
        assert status == (200 if key in allowed else 403), f"{key}: {status}"
    api_client.force_authenticate(None)


def test_api_submit_permission_matrix(api_client, users, scan):
    url = f"/api/verification/scans/{scan.pk}/grades/"
    assert api_client.post(url, {"tier": 1, "decision": "accept"}, format="json").status_code in (401, 403)
    for key in ("clinician", "t2", "t3", "admin", "norole"):
        api_client.force_authenticate(users[key])
        assert api_client.post(url, {"tier": 1, "decision": "accept"}, format="json").status_code == 403, key
    api_client.force_authenticate(users["t1"])
    assert api_client.post(url, {"tier": 1, "decision": "accept"}, format="json").status_code == 201


def test_api_flow_and_errors(api_client, grader_t1, grader_t2, grader_t2b, grader_t3):
    scan = ScanFactory()
    url = f"/api/verification/scans/{scan.pk}/grades/"
    api_client.force_authenticate(grader_t1)
    assert api_client.post(url, {"tier": 1, "decision": "exclude"}, format="json").status_code == 400
    assert api_client.post(url, {"tier": 1, "decision": "accept", "time_taken_ms": 900}, format="json").status_code == 201
    api_client.force_authenticate(grader_t2)
    body = {"tier": 2, "label": "CNV", "cnv": True, "confidence": 5}
    r = api_client.post(url, body, format="json")
    assert r.status_code == 201 and r.json()["findings"]["cnv"] is True
    r = api_client.post(url, body, format="json")
    assert r.status_code == 409 and "already graded" in r.json()["detail"]
    api_client.force_authenticate(grader_t2b)
    assert api_client.post(url, {**body, "label": "DME"}, format="json").status_code == 201
    api_client.force_authenticate(grader_t3)
    worklist = api_client.get("/api/verification/worklist/3/").json()
    assert [item["id"] for item in worklist["results"]] == [scan.pk]
    assert api_client.post(url, {"tier": 3, "label": "DME"}, format="json").status_code == 201
    assert Review.objects.get(scan=scan).final_label == "DME"


def test_api_review_state_is_blinded(settings, api_client, grader_t1, grader_t2, grader_t2b, grader_t3):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    scan = ScanFactory(source_label=Diagnosis.NORMAL)
    make_prediction(scan, predicted=Diagnosis.CNV)
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    services.grade_submit(scan=scan, grader=grader_t2, label="DRUSEN", findings=NO_FINDINGS, confidence=3)
    url = f"/api/verification/scans/{scan.pk}/"
    api_client.force_authenticate(grader_t2b)
    state = api_client.get(url).json()
    assert state["may_see_reference"] is False and state["reference"] is None
    assert [g["tier"] for g in state["grades"]] == [1]
    api_client.force_authenticate(grader_t3)
    state = api_client.get(url).json()
    assert state["reference"]["label"] == "NORMAL" and state["reference"]["model"]["predicted"] == "CNV"
    assert sorted(g["tier"] for g in state["grades"]) == [1, 2]
    api_client.force_authenticate(grader_t2)  # has graded: may see now
    state = api_client.get(url).json()
    assert state["may_see_reference"] is True


def _answer_keeps_to_the_schema(path: str, method: str, response) -> None:
    """Validate a test-client answer against docs/openapi.yaml with schemathesis."""
    operation = schemathesis.openapi.from_path(REPO_ROOT / "docs" / "openapi.yaml")[path][method]
    request = requests.Request(method, "http://testserver" + response.wsgi_request.get_full_path()).prepare()
    answer = Response(status_code=response.status_code, headers={k.lower(): [v] for k, v in response.headers.items()},
                      content=response.content, request=request, elapsed=0.0, verify=True)
    operation.validate_response(answer)


def test_a_tier1_decision_without_a_label_keeps_to_the_schema(api_client, grader_t1):
    """A tier 1 grade's label is "" and an accepted image's exclusion reason too: the schema
    allows both (schemathesis beside a real worker found it did not)."""
    scan = ScanFactory()
    api_client.force_authenticate(grader_t1)
    path = "/api/v1/verification/scans/{id}/grades/"
    r = api_client.post(f"/api/v1/verification/scans/{scan.pk}/grades/", {"tier": 1, "decision": "accept"}, format="json")
    assert r.status_code == 201 and (r.json()["label"], r.json()["exclusion_reason"]) == ("", "")
    _answer_keeps_to_the_schema(path, "POST", r)
    r = api_client.get(f"/api/v1/verification/scans/{scan.pk}/")
    assert r.status_code == 200 and r.json()["grades"][0]["label"] == ""
    _answer_keeps_to_the_schema("/api/v1/verification/scans/{id}/", "GET", r)
