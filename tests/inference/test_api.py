"""REST API of automated reading: permission matrix, blinding, re-run semantics."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cases.models import Scan
from tests.factories import ScanFactory
from tests.inference.support import make_prediction, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def analysed_scan():
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "DME", confidence=0.9)
    return scan


def as_user(api_client, request, who):
    if who:
        api_client.force_authenticate(request.getfixturevalue(who))
    return api_client


@pytest.mark.parametrize(
    "who,expected",
    [(None, 403), ("no_role_user", 403), ("grader_t1", 200), ("grader_t2", 200), ("grader_t3", 200),
     ("clinician", 200), ("admin", 200)],
)
def test_prediction_permissions(api_client, request, analysed_scan, who, expected, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = False  # "confirm or correct": tier 2 may see it
    response = as_user(api_client, request, who).get(f"/api/scans/{analysed_scan.pk}/prediction/")
    assert response.status_code == expected
    if expected == 200:
        body = response.json()
        assert body["status"] == "analysed"
        p = body["prediction"]
        assert p["predicted"] == "DME" and p["urgency"] == "urgent" and p["gate_passed"] is True
        assert set(p["probabilities"]) == {"CNV", "DME", "DRUSEN", "NORMAL"}
        assert p["model_version"]["version"] == "1.0" and len(p["model_version"]["sha256"]) == 64


def test_prediction_hidden_from_a_blinded_grader(api_client, grader_t2, analysed_scan, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = True  # tier 2 has not graded this scan yet
    api_client.force_authenticate(grader_t2)
    response = api_client.get(f"/api/scans/{analysed_scan.pk}/prediction/")
    assert response.status_code == 403
    assert "DME" not in response.content.decode()


def test_prediction_output_carries_the_quality_score_and_the_flag(api_client, clinician):
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "CNV", low_confidence=True, reasons=("no foveal pit",))
    api_client.force_authenticate(clinician)
    p = api_client.get(f"/api/v1/scans/{scan.pk}/reading/").json()["prediction"]
    assert p["low_confidence"] is True and p["quality_score"] == 0.93
    assert p["quality_reasons"] == ["no foveal pit"] and p["quality_components"] == {}


def test_a_blinded_grader_gets_no_quality_flag_from_the_api(api_client, grader_t2, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "CNV", low_confidence=True, reasons=("no foveal pit",))
    api_client.force_authenticate(grader_t2)
    response = api_client.get(f"/api/v1/scans/{scan.pk}/reading/")
    assert response.status_code == 403
    assert "foveal" not in response.content.decode() and "low_confidence" not in response.content.decode()


def test_prediction_of_a_pending_or_failed_scan_is_404_with_status(api_client, clinician):
    api_client.force_authenticate(clinician)
    queued = ScanFactory(status=Scan.Status.QUEUED)
    assert api_client.get(f"/api/scans/{queued.pk}/prediction/").json()["status"] == "queued"
    failed = ScanFactory(status=Scan.Status.FAILED, status_detail="The stored image file is missing.")
    response = api_client.get(f"/api/scans/{failed.pk}/prediction/")
    assert response.status_code == 404 and response.json()["detail"] == failed.status_detail
    assert api_client.get("/api/scans/999999/prediction/").status_code == 404


@pytest.mark.parametrize(
    "who,expected", [(None, 403), ("no_role_user", 403), ("grader_t2", 403), ("grader_t3", 403), ("clinician", 202), ("admin", 202)]
)
def test_rerun_permissions(api_client, request, who, expected, django_capture_on_commit_callbacks):
    scan = ScanFactory(status=Scan.Status.FAILED)
    with django_capture_on_commit_callbacks(execute=False):
        response = as_user(api_client, request, who).post(f"/api/scans/{scan.pk}/rerun/")
    assert response.status_code == expected
    if expected == 202:
        assert response.json()["status"] == "queued"


def test_rerun_of_an_analysed_scan_is_a_conflict(api_client, clinician, analysed_scan):
    api_client.force_authenticate(clinician)
    response = api_client.post(f"/api/scans/{analysed_scan.pk}/rerun/")
    assert response.status_code == 409
    assert "same version" in response.json()["detail"]


@pytest.mark.parametrize(
    "who,expected", [(None, 403), ("no_role_user", 403), ("grader_t1", 200), ("clinician", 200), ("admin", 200)]
)
def test_model_versions_list(api_client, request, who, expected):
    make_version(version="1.0", active=False)
    make_version(version="2.0", active=True)
    response = as_user(api_client, request, who).get("/api/model-versions/")
    assert response.status_code == expected
    if expected == 200:
        rows = response.json()
        assert [r["version"] for r in rows] == ["2.0", "1.0"] and rows[0]["is_active"]


def test_the_heatmap_url_of_a_reading_that_kept_only_its_grid_serves_the_overlay(api_client, client, clinician):
    scan = ScanFactory(status=Scan.Status.ANALYSED, width=64, height=48)
    make_prediction(scan, make_version(), "CNV", heatmap_grid=np.full((12, 16), 0.8))
    api_client.force_authenticate(clinician)
    url = api_client.get(f"/api/scans/{scan.pk}/prediction/").json()["prediction"]["heatmap_url"]
    assert url and url.endswith(f"/analysis/scans/{scan.pk}/heatmap.png")
    client.force_login(clinician)
    response = client.get(url)
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (64, 48)
