"""Issue 14, the clinic's day: the dead ends are gone (re-run, upload reload, 404, API root,
start pages, gate rejection, exam date, confidence display, audit page)."""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import Scan
from tests.clinic.conftest import read_scan
from tests.factories import CaseFactory, ScanFactory
from tests.inference.support import make_prediction, make_version

pytestmark = pytest.mark.django_db


def scan_page(client, user, scan) -> str:
    client.force_login(user)
    return client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()


# --- re-run offered only when the service would accept it -----------------------------------


def test_rerun_not_offered_when_the_active_version_read_the_scan(client, clinician, version):
    scan = read_scan("CNV", version=version)
    assert reverse("inference:scan_rerun", args=[scan.pk]) not in scan_page(client, clinician, scan)


@pytest.mark.parametrize("status", [Scan.Status.QUEUED, Scan.Status.RUNNING])
def test_rerun_not_offered_while_queued_or_running(client, clinician, status):
    scan = ScanFactory(status=status)
    assert reverse("inference:scan_rerun", args=[scan.pk]) not in scan_page(client, clinician, scan)


def test_rerun_offered_after_a_failure_and_after_a_model_switch(client, clinician):
    old = make_version(version="0.9", active=False)
    by_old = read_scan("DME", version=old)
    make_version(version="1.0", active=True)
    rejected = read_scan("CNV", gate_passed=False)
    assert reverse("inference:scan_rerun", args=[by_old.pk]) in scan_page(client, clinician, by_old)
    assert reverse("inference:scan_rerun", args=[rejected.pk]) in scan_page(client, clinician, rejected)


def test_rerun_never_offered_to_graders(client, grader_t1):
    scan = read_scan("CNV", gate_passed=False)
    client.force_login(grader_t1)
    data = client.get(reverse("inference:scan_status", args=[scan.pk])).json()
    assert "Re-run" not in data["html"]


# --- addresses that used to be dead ends -----------------------------------------------------


def test_unknown_condition_gets_the_apps_404_page(client, settings):
    settings.DEBUG = False
    response = client.get("/learn/nonsense/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "The page or record you asked for does not exist." in html and 'class="site-header"' in html
    assert "Traceback" not in html and "URLconf" not in html


def test_api_root_lists_the_endpoints_for_signed_in_users(api_client, clinician):
    assert api_client.get("/api/").status_code in (401, 403)
    api_client.force_authenticate(clinician)
    response = api_client.get("/api/")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    urls = {e["name"]: e["url"] for e in response.json()["endpoints"]}
    assert urls["patients"] == "/api/patients/"
    assert urls["scan_prediction"] == "/api/scans/{id}/prediction/"
    assert urls["worklist"] == "/api/verification/worklist/{tier}/"
    assert all(e["description"] for e in response.json()["endpoints"])


@pytest.mark.parametrize(
    "who,expected",
    [
        ("clinician", "/home/"),
        ("grader_t1", "/verification/worklist/1/"),
        ("grader_t2", "/verification/worklist/2/"),
        ("grader_t3", "/verification/worklist/3/"),
        ("admin", "/verification/statistics/"),
        ("no_role_user", "/"),
    ],
)
def test_each_role_lands_on_its_own_start_page(client, request, who, expected):
    user = request.getfixturevalue(who)
    response = client.post(reverse("login"), {"username": user.username, "password": "pw-" + user.username})
    assert response.status_code == 302 and response["Location"] == reverse("cases:start")
    assert client.get(response["Location"])["Location"] == expected


def test_sign_in_still_honours_next(client, clinician):
    response = client.post(reverse("login") + "?next=/patients/", {"username": "clinician", "password": "pw-clinician"})
    assert response["Location"] == "/patients/"


def test_exam_date_is_prefilled_with_today(client, clinician):
    case = CaseFactory()
    client.force_login(clinician)
    html = client.get(reverse("cases:case_create", args=[case.patient_id])).content.decode()
    assert f'value="{timezone.localdate():%Y-%m-%d}"' in html


# --- the gate's rejection: one clear state ---------------------------------------------------


def test_gate_rejected_scan_shows_one_state_and_its_reason_once(client, clinician):
    scan = read_scan("CNV", gate_passed=False)
    html = scan_page(client, clinician, scan)
    assert "Not read: not an OCT B-scan" in html
    assert "Analysis failed" not in html
    assert html.count(scan.status_detail) == 1
    case_html = client.get(scan.case.get_absolute_url()).content.decode()
    assert case_html.count(scan.status_detail) == 1 and "Not read: not an OCT B-scan" in case_html


def test_tier1_worklist_hides_gate_rejected_scans_unless_asked(client, grader_t1):
    rejected = read_scan("CNV", gate_passed=False)
    good = read_scan("CNV")
    client.force_login(grader_t1)
    url = reverse("verification:worklist", args=[1])
    default = client.get(url).content.decode()
    assert f"#{good.pk} " in default and f"#{rejected.pk} " not in default and "?rejected=1" in default
    shown = client.get(url + "?rejected=1").content.decode()
    assert f"#{rejected.pk} " in shown and "not an OCT B-scan" in shown
    # "Start grading" never lands on a rejected scan.
    assert client.get(reverse("verification:worklist_next", args=[1]))["Location"].startswith(
        reverse("verification:grade", args=[good.pk, 1])
    )


# --- confidence display ----------------------------------------------------------------------


@pytest.mark.parametrize("value,shown", [(0.99996, ">99.9%"), (0.8312, "83.1%"), (0.00001, "<0.1%"), (0.0, "0.0%")])
def test_percent_never_claims_certainty(value, shown):
    from inference.templatetags.inference_tags import percent

    assert percent(value) == shown


def test_scan_page_never_shows_confidence_100(client, clinician, version):
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, version, "CNV", confidence=0.99997)
    html = scan_page(client, clinician, scan)
    assert "Confidence <strong>&gt;99.9%</strong>" in html
    assert 'prob-value">&gt;99.9%' in html and 'prob-value">100' not in html


def test_tier1_worklist_api_hides_gate_rejected_scans_unless_asked(api_client, grader_t1):
    rejected = read_scan("CNV", gate_passed=False)
    good = read_scan("CNV")
    api_client.force_authenticate(grader_t1)
    url = reverse("verification-api:worklist", args=[1])
    ids = {row["id"] for row in api_client.get(url).json()["results"]}
    assert good.pk in ids and rejected.pk not in ids
    ids = {row["id"] for row in api_client.get(url + "?rejected=1").json()["results"]}
    assert {good.pk, rejected.pk} <= ids
