"""/api/v1/: one dialect, version-local links, django-filter on lists, cursor pages, 202 uploads."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from cases.models import Scan
from cases.roles import Role
from tests.conftest import make_user
from tests.factories import CaseFactory, PatientFactory, ScanFactory, bscan_bytes
from verification import reports
from verification import services as grading

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def api(api_client, clinician):
    api_client.force_authenticate(clinician)
    return api_client


def test_the_root_lists_every_endpoint_under_v1(api):
    body = api.get("/api/v1/").json()
    urls = {e["name"]: e["url"] for e in body["endpoints"]}
    assert body["version"] == "v1" and body["schema"] == "/api/v1/schema/"
    assert urls["patients"] == "/api/v1/patients/"
    assert urls["scan_reading"] == "/api/v1/scans/{id}/reading/"
    assert urls["worklist"] == "/api/v1/verification/worklist/{tier}/"
    assert urls["volume"] == "/api/v1/volumes/{id}/"
    assert urls["case_report_state"] == "/api/v1/cases/{id}/report/"
    assert urls["case_report_sign"] == "/api/v1/cases/{id}/report/sign/"
    assert urls["export_verified_zip"] == "/api/v1/verification/exports/verified.zip"
    # The unversioned aliases keep their own paths.
    assert {e["name"]: e["url"] for e in api.get("/api/").json()["endpoints"]}["patients"] == "/api/patients/"


def test_links_stay_in_the_callers_version(api):
    patient = PatientFactory()
    assert api.get(f"/api/v1/patients/{patient.pk}/").json()["url"] == f"/api/v1/patients/{patient.pk}/"
    assert api.get(f"/api/patients/{patient.pk}/").json()["url"] == f"/api/patients/{patient.pk}/"
    assert reverse("v1:cases-api:patient_detail", args=[patient.pk]) == f"/api/v1/patients/{patient.pk}/"


def test_patients_filter_and_order(api):
    PatientFactory(identifier="B-2", birth_year=1950, sex="F")
    PatientFactory(identifier="A-1", birth_year=1980, sex="M")
    PatientFactory(identifier="C-3", birth_year=1990, sex="F")
    ids = lambda q: [p["identifier"] for p in api.get(f"/api/v1/patients/?{q}").json()["results"]]  # noqa: E731
    assert ids("") == ["A-1", "B-2", "C-3"]
    assert ids("sex=F") == ["B-2", "C-3"]
    assert ids("born_after=1960&ordering=-birth_year") == ["C-3", "A-1"]


@pytest.mark.parametrize("query", ["sex=Q", "born_after=old", "ordering=password", "exam_after=yesterday"])
def test_an_invalid_filter_is_a_400_in_the_one_dialect(api, query):
    url = "/api/v1/cases/" if query.startswith("exam") else "/api/v1/patients/"
    response = api.get(f"{url}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] and isinstance(body["errors"], dict)


def test_scans_page_by_cursor_in_upload_order(api):
    case = CaseFactory()
    scans = [ScanFactory(case=case) for _ in range(5)]
    first = api.get(f"/api/v1/scans/?case={case.pk}&page_size=2").json()
    assert "count" not in first and first["previous"] is None
    seen = [s["id"] for s in first["results"]]
    url = first["next"]
    while url:
        page = api.get(url).json()
        seen += [s["id"] for s in page["results"]]
        url = page["next"]
    assert seen == [s.pk for s in scans]
    # The alias keeps numbered pages.
    assert api.get(f"/api/scans/?case={case.pk}").json()["count"] == 5


def test_upload_answers_202_with_status_urls_and_refuses_per_file(api, media_root):
    case = CaseFactory()
    files = [
        SimpleUploadedFile("ok.png", bscan_bytes(seed=3)),
        SimpleUploadedFile("fake.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
    ]
    response = api.post(f"/api/v1/cases/{case.pk}/scans/", {"files": files}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    scan = Scan.objects.get(case=case)
    assert [s["id"] for s in body["accepted"]] == [scan.pk]
    assert body["accepted"][0]["url"] == f"/api/v1/scans/{scan.pk}/"
    assert body["accepted"][0]["reading_url"] == f"/api/v1/scans/{scan.pk}/reading/"
    assert body["rejected"][0]["name"] == "fake.jpg" and "SVG" in body["rejected"][0]["reason"]


def test_an_upload_with_only_bad_files_stores_nothing(api, media_root):
    case = CaseFactory()
    files = [SimpleUploadedFile("fake.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")]
    response = api.post(f"/api/v1/cases/{case.pk}/scans/", {"files": files}, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"] == "No file was accepted." and "fake.jpg" in response.json()["errors"]["files"][0]
    assert not Scan.objects.exists() and not [p for p in media_root.rglob("*") if p.is_file()]


def test_worklist_pages_by_cursor_in_the_rules_order(api_client, grader_t1):
    scans = [ScanFactory() for _ in range(3)]
    api_client.force_authenticate(grader_t1)
    first = api_client.get("/api/v1/verification/worklist/1/?page_size=2").json()
    second = api_client.get(first["next"]).json()
    assert [i["id"] for i in first["results"] + second["results"]] == [s.pk for s in scans]
    assert first["results"][0]["url"] == f"/api/v1/verification/scans/{scans[0].pk}/"


def test_model_versions_filter(api):
    assert api.get("/api/v1/model-versions/?is_active=true").status_code == 200
    assert api.get("/api/v1/model-versions/?name=none").json() == []


def test_the_report_pdf_is_a_draft_until_signed_and_named_by_the_case(api, clinician):
    scan = ScanFactory(status=Scan.Status.ANALYSED)  # read: the report may be signed
    url = f"/api/v1/cases/{scan.case_id}/report.pdf"
    draft = api.get(url)
    assert draft.status_code == 200 and draft["Content-Type"] == "application/pdf"
    assert draft.content.startswith(b"%PDF") and "draft" in draft["Content-Disposition"]
    assert scan.case.patient.identifier not in draft["Content-Disposition"]
    reports.report_sign(case=scan.case, user=clinician)
    assert "-v1.pdf" in api.get(url)["Content-Disposition"]
    assert api.get(url + "?version=7").status_code == 404
    assert api.get(url + "?version=x").json()["errors"]["version"]
    # Refusals stay JSON whatever the client accepts.
    assert api.get("/api/v1/cases/999999/report.pdf", HTTP_ACCEPT="application/pdf").json()["detail"]


def test_the_report_state_lists_versions_and_signing_makes_the_next_one(api, clinician, grader_t3):
    scan = ScanFactory(status=Scan.Status.ANALYSED)  # read: the report may be signed
    case = scan.case
    base = f"/api/v1/cases/{case.pk}/report/"
    state = api.get(base).json()
    assert state == {
        "case": case.pk, "status": "unsigned", "current_version": None, "may_sign": True,
        "pdf_url": f"/api/v1/cases/{case.pk}/report.pdf", "sign_url": f"/api/v1/cases/{case.pk}/report/sign/",
        "versions": [],
    }
    signed = api.post(state["sign_url"])
    assert signed.status_code == 201, signed.content
    v1 = signed.json()
    assert v1["number"] == 1 and v1["signed_by"] == clinician.username and v1["current"] is True
    assert v1["pdf_url"] == f"/api/v1/cases/{case.pk}/report.pdf?version=1"
    pdf = api.get(v1["pdf_url"])
    assert pdf.content.startswith(b"%PDF") and "-v1.pdf" in pdf["Content-Disposition"]
    state = api.get(base).json()
    assert (state["status"], state["current_version"], state["may_sign"]) == ("signed", 1, False)

    # Nothing changed since: the service refuses, in the one dialect.
    again = api.post(state["sign_url"])
    assert again.status_code == 409
    assert again.json() == {"detail": "Version 1 of this report is already signed and nothing has changed since."}

    # A verification after signing: v1 stays, the report is a draft again, signing makes v2.
    findings = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}
    grading.quality_submit(scan=scan, grader=make_user("t1-r", Role.GRADER_T1), accept=True)
    for name in ("t2-r", "t2-s"):
        grading.grade_submit(scan=scan, grader=make_user(name, Role.GRADER_T2), label="DME", findings=findings,
                             confidence=3)
    grading.verify_submit(scan=scan, grader=grader_t3, final_label="DME")
    state = api.get(base).json()
    assert (state["status"], state["current_version"], state["may_sign"]) == ("changed", None, True)
    assert "draft" in api.get(state["pdf_url"])["Content-Disposition"]
    assert api.post(state["sign_url"]).json()["number"] == 2
    state = api.get(base).json()
    assert [(v["number"], v["current"]) for v in state["versions"]] == [(2, True), (1, False)]
    assert api.get(state["versions"][1]["pdf_url"]).content == pdf.content  # v1 as signed, never re-rendered


def test_an_examination_without_scans_has_no_report_to_sign(api):
    case = CaseFactory()
    assert api.get(f"/api/v1/cases/{case.pk}/report/").json()["may_sign"] is False
    refusal = api.post(f"/api/v1/cases/{case.pk}/report/sign/")
    assert refusal.status_code == 409 and "no scans" in refusal.json()["detail"]
    assert api.post("/api/v1/cases/999999/report/sign/").status_code == 404


def test_only_clinic_staff_read_or_sign_the_report_through_the_api(api_client, grader_t3):
    case = ScanFactory().case
    api_client.force_authenticate(grader_t3)
    for response in (api_client.get(f"/api/v1/cases/{case.pk}/report/"),
                     api_client.post(f"/api/v1/cases/{case.pk}/report/sign/")):
        assert response.status_code == 403 and response.json()["detail"]
    assert not case.report_versions.exists()


def test_the_verified_zip_export_streams_for_tier_3_only(api_client, grader_t3, grader_t1):
    api_client.force_authenticate(grader_t1)
    assert api_client.get("/api/v1/verification/exports/verified.zip").status_code == 403
    api_client.force_authenticate(grader_t3)
    response = api_client.get("/api/v1/verification/exports/verified.zip", HTTP_ACCEPT="application/zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip" and response.streaming
    assert 'filename="verified-oct-' in response["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        assert zf.namelist() == ["MANIFEST.csv"]


def test_the_verified_export_is_csv_for_tier_3_only(api_client, grader_t3, grader_t1):
    api_client.force_authenticate(grader_t1)
    assert api_client.get("/api/v1/verification/exports/verified.csv").status_code == 403
    api_client.force_authenticate(grader_t3)
    response = api_client.get("/api/v1/verification/exports/verified.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert b"".join(response.streaming_content).splitlines()[0]


def test_statistics_as_json_for_tier_3(api_client, grader_t3, grader_t1, grader_t2, grader_t2b):
    findings = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}
    scan = ScanFactory()
    grading.quality_submit(scan=scan, grader=grader_t1, accept=True)
    grading.grade_submit(scan=scan, grader=grader_t2, label="DME", findings=findings, confidence=3)
    grading.grade_submit(scan=scan, grader=grader_t2b, label="DME", findings=findings, confidence=3)
    api_client.force_authenticate(grader_t3)
    body = api_client.get("/api/v1/verification/statistics/").json()
    assert body["labels"] == ["CNV", "DME", "DRUSEN", "NORMAL"] and body["qc_total"] == 1
    assert body["pairwise"] and "stages" in body
