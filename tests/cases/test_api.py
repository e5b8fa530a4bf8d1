"""REST API: permission matrix, create, list, retrieve, multipart upload with reasons."""
from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from cases.models import Case, Patient, Scan
from cases.roles import Role
from tests.cases.conftest import stored_files, upload
from tests.factories import CaseFactory, PatientFactory, ScanFactory, bscan_bytes

GRADERS = ["grader_t1", "grader_t2", "grader_t3"]


@pytest.fixture
def scan(db):
    return ScanFactory()


def record_endpoints(scan: Scan) -> list[str]:
    return [
        reverse("cases-api:patient_list"),
        reverse("cases-api:patient_detail", args=[scan.case.patient_id]),
        reverse("cases-api:case_list"),
        reverse("cases-api:case_detail", args=[scan.case_id]),
        reverse("cases-api:scan_list"),
    ]


def test_anonymous_is_refused_everywhere(api_client, scan):
    for url in record_endpoints(scan) + [reverse("cases-api:scan_detail", args=[scan.pk])]:
        response = api_client.get(url)
        assert response.status_code in (401, 403), url
        assert "detail" in response.json()
    response = api_client.post(reverse("cases-api:case_scan_upload", args=[scan.case_id]), {}, format="multipart")
    assert response.status_code in (401, 403)


@pytest.mark.parametrize("role", GRADERS + ["no_role_user"])
def test_other_roles_cannot_read_records(api_client, scan, role, request):
    api_client.force_authenticate(request.getfixturevalue(role))
    for url in record_endpoints(scan):
        response = api_client.get(url)
        assert response.status_code == 403, url
        assert response.json()["detail"]
    response = api_client.post(reverse("cases-api:patient_list"), {"identifier": "X"}, format="json")
    assert response.status_code == 403
    upload_url = reverse("cases-api:case_scan_upload", args=[scan.case_id])
    assert api_client.post(upload_url, {"files": [upload("a.png", bscan_bytes())]}, format="multipart").status_code == 403
    assert not Patient.objects.filter(identifier="X").exists() and Scan.objects.count() == 1


@pytest.mark.parametrize("role", ["clinician", "admin"])
def test_clinic_staff_and_admins_read_records(api_client, scan, role, request):
    api_client.force_authenticate(request.getfixturevalue(role))
    for url in record_endpoints(scan) + [reverse("cases-api:scan_detail", args=[scan.pk])]:
        assert api_client.get(url).status_code == 200, url


@pytest.mark.parametrize("role", GRADERS)
def test_graders_may_retrieve_scan_metadata(api_client, scan, role, request):
    api_client.force_authenticate(request.getfixturevalue(role))
    body = api_client.get(reverse("cases-api:scan_detail", args=[scan.pk])).json()
    assert body["image_url"] == reverse("cases:scan_image", args=[scan.pk])
    assert "patient" not in body


def test_no_role_user_cannot_retrieve_scans(api_client, scan, no_role_user):
    api_client.force_authenticate(no_role_user)
    assert api_client.get(reverse("cases-api:scan_detail", args=[scan.pk])).status_code == 403


def test_unknown_ids_are_404_with_detail(api_client, clinician):
    api_client.force_authenticate(clinician)
    for name in ("patient_detail", "case_detail", "scan_detail"):
        response = api_client.get(reverse(f"cases-api:{name}", args=[999_999]))
        assert response.status_code == 404
        assert response.json()["detail"].startswith("There is no")


def test_token_authentication_works(api_client, clinician, scan):
    token = Token.objects.create(user=clinician)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api_client.get(reverse("cases-api:patient_list")).status_code == 200


def test_patient_create_list_and_search(api_client, clinician):
    api_client.force_authenticate(clinician)
    response = api_client.post(reverse("cases-api:patient_list"), {"identifier": "API-1", "sex": "F", "birth_year": 1960}, format="json")
    assert response.status_code == 201
    assert response.json()["identifier"] == "API-1"
    assert Patient.objects.get(identifier="API-1").created_by == clinician
    PatientFactory(identifier="OTHER")
    body = api_client.get(reverse("cases-api:patient_list") + "?q=api").json()
    assert body["count"] == 1 and body["results"][0]["identifier"] == "API-1"


def test_patient_create_errors_are_clear(api_client, clinician):
    api_client.force_authenticate(clinician)
    PatientFactory(identifier="DUP")
    response = api_client.post(reverse("cases-api:patient_list"), {"identifier": "DUP"}, format="json")
    assert response.status_code == 400
    assert "identifier" in response.json()["detail"]
    response = api_client.post(reverse("cases-api:patient_list"), {"sex": "Q"}, format="json")
    assert response.status_code == 400
    assert {"identifier", "sex"} <= set(response.json()["errors"])


def test_case_create_and_filter_by_patient(api_client, clinician):
    patient = PatientFactory()
    CaseFactory()
    api_client.force_authenticate(clinician)
    response = api_client.post(
        reverse("cases-api:case_list"), {"patient": patient.pk, "eye": "OS", "exam_date": "2026-02-01"}, format="json"
    )
    assert response.status_code == 201
    assert Case.objects.get(pk=response.json()["id"]).patient == patient
    body = api_client.get(reverse("cases-api:case_list") + f"?patient={patient.pk}").json()
    assert [c["id"] for c in body["results"]] == [response.json()["id"]]
    assert api_client.get(reverse("cases-api:case_list") + "?patient=abc").status_code == 400


def test_case_create_for_unknown_patient_is_404(api_client, clinician):
    api_client.force_authenticate(clinician)
    response = api_client.post(reverse("cases-api:case_list"), {"patient": 999_999, "eye": "OD", "exam_date": "2026-02-01"}, format="json")
    assert response.status_code == 404


def test_multipart_upload_reports_accepted_and_rejected(api_client, clinician, media_root):
    case = CaseFactory()
    api_client.force_authenticate(clinician)
    files = [upload("ok.png", bscan_bytes(seed=1)), upload("fake.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")]
    response = api_client.post(reverse("cases-api:case_scan_upload", args=[case.pk]), {"files": files}, format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert [s["original_name"] for s in body["accepted"]] == ["ok.png"]
    assert body["accepted"][0]["status"] in Scan.Status.values
    assert body["rejected"] == [
        {"name": "fake.jpg", "reason": "The file is an SVG drawing, not an image. Accepted formats: JPEG, PNG, TIFF or BMP."}
    ]
    assert len(stored_files(media_root)) == 2
    listed = api_client.get(reverse("cases-api:scan_list") + f"?case={case.pk}").json()
    assert listed["count"] == 1


def test_upload_with_only_bad_files_is_400(api_client, clinician, media_root):
    case = CaseFactory()
    api_client.force_authenticate(clinician)
    response = api_client.post(
        reverse("cases-api:case_scan_upload", args=[case.pk]), {"files": [upload("e.png", b"")]}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "No file was accepted."
    assert response.json()["rejected"] == [{"name": "e.png", "reason": "The file is empty (0 bytes)."}]
    assert not Scan.objects.exists() and stored_files(media_root) == []


def test_upload_of_the_wrong_type_is_refused(api_client, clinician, media_root):
    """JSON instead of multipart, and a text field instead of a file."""
    case = CaseFactory()
    api_client.force_authenticate(clinician)
    url = reverse("cases-api:case_scan_upload", args=[case.pk])
    response = api_client.post(url, {"files": "aGVsbG8="}, format="json")
    assert response.status_code == 415
    assert "detail" in response.json()
    response = api_client.post(url, {"files": "not a file"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"] == "The field 'files' must carry uploaded files (multipart/form-data)."
    response = api_client.post(url, {}, format="multipart")
    assert response.json()["detail"] == "Send one or more images in the multipart field 'files'."
    assert not Scan.objects.exists() and stored_files(media_root) == []


def test_source_label_is_hidden_from_an_ungraded_tier2_grader_in_reading_centre_mode(
    api_client, user_factory, settings
):
    scans = [ScanFactory(source_label="CNV"), ScanFactory(source_label="DME")]
    both = user_factory("clin-grader", Role.CLINICIAN, Role.GRADER_T2)
    api_client.force_authenticate(both)
    detail = reverse("cases-api:scan_detail", args=[scans[0].pk])
    listing = reverse("cases-api:scan_list")

    settings.VERIFICATION_READING_CENTRE_MODE = True
    assert api_client.get(detail).json()["source_label"] is None
    assert [s["source_label"] for s in api_client.get(listing).json()["results"]] == [None, None]

    settings.VERIFICATION_READING_CENTRE_MODE = False
    assert api_client.get(detail).json()["source_label"] == "CNV"
    assert sorted(s["source_label"] for s in api_client.get(listing).json()["results"]) == ["CNV", "DME"]
