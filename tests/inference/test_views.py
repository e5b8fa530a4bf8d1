"""Pages and HTML-side endpoints of automated reading: permission matrix, blinding,
partials (pending, failed, result, hidden), no N+1 on the case page."""
from __future__ import annotations

import io
from unittest import mock

import numpy as np
import pytest
from PIL import Image
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cases.models import Scan
from inference.heatmap import heatmap_overlay_from_grid
from inference.models import Prediction
from tests.factories import CaseFactory, ScanFactory
from tests.inference.support import make_prediction, make_version, png_bytes

pytestmark = pytest.mark.django_db

ROLE_FIXTURES = ["clinician", "grader_t1", "grader_t2", "grader_t3", "admin"]


@pytest.fixture
def analysed_scan():
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "CNV", confidence=0.83, heatmap=png_bytes(8, 8, "RGB"))
    return scan


def get_as(client, user, url):
    if user is not None:
        client.force_login(user)
    return client.get(url)


@pytest.fixture
def blind(settings):
    """Reading-centre mode: a tier 2 grader sees no model output before grading."""
    settings.VERIFICATION_READING_CENTRE_MODE = True


# --- permission matrix -------------------------------------------------------------------


@pytest.mark.parametrize(
    "who,expected",
    [(None, 302), ("no_role_user", 403), ("grader_t1", 200), ("grader_t2", 200), ("grader_t3", 200),
     ("clinician", 200), ("admin", 200)],
)
def test_scan_status_permissions(client, request, analysed_scan, who, expected):
    user = request.getfixturevalue(who) if who else None
    response = get_as(client, user, reverse("inference:scan_status", args=[analysed_scan.pk]))
    assert response.status_code == expected
    if expected == 302:
        assert "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(
    "who,expected",
    [(None, 302), ("no_role_user", 403), ("grader_t2", 403), ("clinician", 200), ("admin", 200)],
)
def test_case_status_permissions(client, request, analysed_scan, who, expected):
    user = request.getfixturevalue(who) if who else None
    response = get_as(client, user, reverse("inference:case_status", args=[analysed_scan.case_id]))
    assert response.status_code == expected


@pytest.mark.parametrize(
    "who,expected",
    [(None, 302), ("no_role_user", 403), ("grader_t1", 200), ("grader_t2", 200), ("clinician", 200), ("admin", 200)],
)
def test_heatmap_has_the_scan_image_permission(client, request, analysed_scan, who, expected, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = False  # "confirm or correct": tier 2 may see it
    user = request.getfixturevalue(who) if who else None
    response = get_as(client, user, reverse("inference:heatmap", args=[analysed_scan.pk]))
    assert response.status_code == expected
    if expected == 200:
        assert response["Content-Type"] == "image/png"
        assert "no-store" in response["Cache-Control"]
        assert response.content.startswith(b"\x89PNG")


def test_heatmap_hidden_from_a_blinded_grader(client, grader_t2, analysed_scan, blind):
    assert get_as(client, grader_t2, reverse("inference:heatmap", args=[analysed_scan.pk])).status_code == 404


@pytest.fixture
def grid_scan():
    """A reading as the worker stores it now: the heatmap grid, no overlay file yet."""
    scan = ScanFactory(status=Scan.Status.ANALYSED, width=64, height=48)
    y, x = np.mgrid[0:12, 0:16]
    prediction = make_prediction(scan, make_version(), "CNV", heatmap_grid=np.exp(-((x - 8) ** 2 + (y - 6) ** 2) / 8.0))
    return scan, prediction


@pytest.mark.parametrize(
    "who,expected",
    [(None, 302), ("no_role_user", 403), ("grader_t1", 200), ("grader_t2", 200), ("clinician", 200), ("admin", 200)],
)
def test_heatmap_drawn_on_first_request_has_the_scan_image_permission(client, request, grid_scan, who, expected,
                                                                       settings):
    settings.VERIFICATION_READING_CENTRE_MODE = False
    scan, prediction = grid_scan
    user = request.getfixturevalue(who) if who else None
    response = get_as(client, user, reverse("inference:heatmap", args=[scan.pk]))
    assert response.status_code == expected
    stored = prediction.heatmap.storage.exists(prediction.heatmap.name)
    if expected == 200:
        overlay = Image.open(io.BytesIO(response.content))
        assert overlay.size == (64, 48) and overlay.mode == "P" and "no-store" in response["Cache-Control"]
        assert stored  # kept for the next request
    else:
        assert not stored  # nothing rendered for who may not see it


def test_heatmap_is_rendered_once_then_served_from_storage(client, clinician, grid_scan):
    scan, prediction = grid_scan
    url = reverse("inference:heatmap", args=[scan.pk])
    first = get_as(client, clinician, url).content
    expected = heatmap_overlay_from_grid(bytes(Prediction.objects.get(pk=prediction.pk).heatmap_grid), (64, 48))
    assert first == expected
    with mock.patch("inference.selectors.heatmap_overlay_from_grid") as render:
        assert client.get(url).content == first
    render.assert_not_called()
    # The file lost: drawn again from the grid.
    prediction.heatmap.storage.delete(prediction.heatmap.name)
    assert client.get(url).content == first


def test_heatmap_drawn_on_demand_is_hidden_from_a_blinded_grader(client, grader_t2, grid_scan, blind):
    scan, prediction = grid_scan
    assert get_as(client, grader_t2, reverse("inference:heatmap", args=[scan.pk])).status_code == 404
    assert not prediction.heatmap.storage.exists(prediction.heatmap.name)


def test_a_reading_without_heatmap_has_none(client, clinician):
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "CNV")
    assert get_as(client, clinician, reverse("inference:heatmap", args=[scan.pk])).status_code == 404


def test_unknown_scan_is_404(client, clinician):
    assert get_as(client, clinician, reverse("inference:scan_status", args=[999999])).status_code == 404


@pytest.mark.parametrize("who,expected", [(None, 302), ("no_role_user", 403), ("grader_t3", 403), ("clinician", 302)])
def test_rerun_permissions(client, request, who, expected, django_capture_on_commit_callbacks):
    scan = ScanFactory(status=Scan.Status.FAILED, status_detail="x")
    user = request.getfixturevalue(who) if who else None
    if user:
        client.force_login(user)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("inference:scan_rerun", args=[scan.pk]), {"next": "/patients/"})
    assert response.status_code == expected
    scan.refresh_from_db()
    if who == "clinician":
        assert response["Location"] == "/patients/"
        assert scan.status == Scan.Status.QUEUED
    else:
        assert scan.status == Scan.Status.FAILED


def test_rerun_is_post_only_and_ignores_offsite_next(client, clinician, django_capture_on_commit_callbacks):
    scan = ScanFactory(status=Scan.Status.FAILED)
    client.force_login(clinician)
    assert client.get(reverse("inference:scan_rerun", args=[scan.pk])).status_code == 405
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("inference:scan_rerun", args=[scan.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == scan.get_absolute_url()


def test_rerun_of_an_analysed_scan_says_why_not(client, clinician, analysed_scan):
    client.force_login(clinician)
    response = client.post(reverse("inference:scan_rerun", args=[analysed_scan.pk]))
    assert response.status_code == 409
    assert "already been read by the active model" in response.content.decode()


def test_rerun_requires_csrf(clinician):
    from django.test import Client

    scan = ScanFactory(status=Scan.Status.FAILED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    assert client.post(reverse("inference:scan_rerun", args=[scan.pk])).status_code == 403


# --- partials ----------------------------------------------------------------------------


def test_scan_page_shows_the_reading(client, clinician, analysed_scan):
    client.force_login(clinician)
    html = client.get(reverse("cases:scan_detail", args=[analysed_scan.pk])).content.decode()
    assert "Choroidal neovascularization (CNV)" in html
    assert 'class="badge urgent"' in html and "Urgent referral" in html
    assert "83.0%" in html  # confidence, one decimal
    assert html.count('class="prob-row') == 4
    assert "octnet v1.0" in html
    assert 'href="/learn/cnv/"' in html
    assert "Decision support, not a diagnosis" in html
    assert reverse("inference:heatmap", args=[analysed_scan.pk]) in html and "data-heatmap-toggle" in html
    # The active version read it successfully: the service would refuse a re-run, so none is offered.
    assert reverse("inference:scan_rerun", args=[analysed_scan.pk]) not in html
    assert "inference/poll.js" in html


def test_scan_page_shows_the_quality_score_and_no_flag_when_trusted(client, clinician, analysed_scan):
    client.force_login(clinician)
    html = client.get(reverse("cases:scan_detail", args=[analysed_scan.pk])).content.decode()
    assert "quality score <strong>0.12</strong>" in html
    assert "Low confidence" not in html and "data-low-confidence" not in html


def test_a_flagged_reading_shows_low_confidence_needs_review_with_its_reasons(client, clinician):
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "DME", confidence=0.55, low_confidence=True,
                    reasons=("noisy image", "uncertain between DME and CNV"))
    client.force_login(clinician)
    html = client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()
    assert "Low confidence — needs review." in html and "data-low-confidence" in html
    assert "Noisy image; uncertain between DME and CNV." in html
    assert "quality score <strong>0.93</strong>" in html
    data = get_as(client, clinician, reverse("inference:scan_status", args=[scan.pk])).json()
    assert data["prediction"]["low_confidence"] is True and data["prediction"]["quality_score"] == 0.93
    assert data["prediction"]["quality_reasons"] == ["noisy image", "uncertain between DME and CNV"]
    # The examination page's row carries the badge too.
    row = get_as(client, clinician, reverse("inference:scan_status", args=[scan.pk]) + "?fragment=row").json()
    assert "Low confidence — needs review" in row["html"]
    case_html = client.get(scan.case.get_absolute_url()).content.decode()
    assert "badge low-confidence" in case_html


def test_a_blinded_grader_sees_no_low_confidence_flag_either(client, grader_t2, blind):
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, make_version(), "DME", low_confidence=True)
    data = get_as(client, grader_t2, reverse("inference:scan_status", args=[scan.pk])).json()
    assert "prediction" not in data
    for html in (data["html"], client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()):
        assert "Low confidence" not in html and "quality score" not in html and "noisy image" not in html
    row = get_as(client, grader_t2, reverse("inference:scan_status", args=[scan.pk]) + "?fragment=row").json()
    assert "Low confidence" not in row["html"]


def test_status_json_for_a_grader_has_no_rerun_button(client, grader_t1, analysed_scan):
    data = get_as(client, grader_t1, reverse("inference:scan_status", args=[analysed_scan.pk])).json()
    assert data["status"] == "analysed" and data["prediction"]["predicted"] == "CNV"
    assert "Re-run" not in data["html"] and "CNV" in data["html"]


def test_blinded_grader_sees_neither_class_nor_probabilities(client, grader_t2, analysed_scan, blind):
    data = get_as(client, grader_t2, reverse("inference:scan_status", args=[analysed_scan.pk])).json()
    assert "prediction" not in data
    assert "CNV" not in data["html"] and "prob-row" not in data["html"] and "heatmap" not in data["html"]
    assert "hidden until you have submitted your own grade" in data["html"]


def test_pending_scan_renders_a_polling_placeholder(client, clinician):
    scan = ScanFactory(status=Scan.Status.QUEUED)
    data = get_as(client, clinician, reverse("inference:scan_status", args=[scan.pk])).json()
    assert data["status"] == "queued"
    assert 'data-status="queued"' in data["html"] and "appears here when it is ready" in data["html"]
    assert "Re-run" not in data["html"]


def test_failed_scan_shows_the_reason(client, clinician):
    scan = ScanFactory(status=Scan.Status.FAILED, status_detail="The stored image could not be read as an image.")
    data = get_as(client, clinician, reverse("inference:scan_status", args=[scan.pk])).json()
    assert data["detail"] == scan.status_detail
    assert "Analysis failed" in data["html"] and scan.status_detail in data["html"]
    assert "Re-run analysis" in data["html"]


def test_row_fragment(client, clinician, analysed_scan):
    data = get_as(client, clinician, reverse("inference:scan_status", args=[analysed_scan.pk]) + "?fragment=row").json()
    assert "analysis-row" in data["html"] and "Urgent referral" in data["html"]


def test_case_summary_shows_the_most_urgent_finding(client, clinician):
    case = CaseFactory()
    version = make_version()
    for label, conf in [("NORMAL", 0.99), ("DRUSEN", 0.9), ("DME", 0.6), ("CNV", 0.7)]:
        make_prediction(ScanFactory(case=case, status=Scan.Status.ANALYSED), version, label, confidence=conf)
    ScanFactory(case=case, status=Scan.Status.QUEUED)
    data = get_as(client, clinician, reverse("inference:case_status", args=[case.pk])).json()
    assert data["pending"] == 1
    assert "Most urgent finding" in data["html"] and "Choroidal neovascularization (CNV)" in data["html"]
    assert "4 of 5 scans read" in data["html"] and "1 pending" in data["html"]


def test_case_page_queries_do_not_grow_with_scans(client, clinician):
    version = make_version()

    def case_with(n):
        case = CaseFactory()
        for _ in range(n):
            make_prediction(ScanFactory(case=case, status=Scan.Status.ANALYSED), version, "DME")
        return case

    small, large = case_with(2), case_with(8)
    client.force_login(clinician)
    counts = []
    for case in (small, large):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(reverse("cases:case_detail", args=[case.pk]))
        assert response.status_code == 200
        counts.append(len(ctx.captured_queries))
    html = response.content.decode()
    assert html.count("analysis-row") == 8 and "Most urgent finding" in html
    assert counts[0] == counts[1], counts


# --- admin --------------------------------------------------------------------------------


def test_admin_lists_versions_and_activates_one(client, admin, analysed_scan):
    from inference.models import ModelVersion

    newer = make_version(version="2.0", active=False)
    client.force_login(admin)
    assert client.get("/admin/inference/modelversion/").status_code == 200
    assert client.get("/admin/inference/prediction/").status_code == 200
    p = analysed_scan.predictions.get()
    assert client.get(f"/admin/inference/prediction/{p.pk}/change/").status_code == 200
    response = client.post(
        "/admin/inference/modelversion/", {"action": "activate", "_selected_action": [newer.pk]}, follow=True
    )
    assert response.status_code == 200
    assert list(ModelVersion.objects.filter(is_active=True)) == [newer]
