"""HTML pages: permission matrix for every view, forms, upload report, private images, audit."""
from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from cases.models import Case, Patient, Scan
from cases.roles import Role
from tests.cases.conftest import stored_files, upload
from tests.factories import CaseFactory, ScanFactory, bscan_bytes

GRADERS = ["grader_t1", "grader_t2", "grader_t3"]
NO_RECORDS = GRADERS + ["no_role_user"]


@pytest.fixture
def scan(db):
    return ScanFactory()


def clinic_pages(scan: Scan) -> list[str]:
    case, patient = scan.case, scan.case.patient
    return [
        reverse("cases:patient_list"),
        reverse("cases:patient_create"),
        reverse("cases:patient_detail", args=[patient.pk]),
        reverse("cases:patient_update", args=[patient.pk]),
        reverse("cases:case_create", args=[patient.pk]),
        reverse("cases:case_detail", args=[case.pk]),
        reverse("cases:case_update", args=[case.pk]),
        reverse("cases:scan_detail", args=[scan.pk]),
    ]


PUBLIC = ["cases:home", "cases:about", "login"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_pages_render_for_anonymous(client, db, name):
    assert client.get(reverse(name)).status_code == 200


@pytest.mark.parametrize("slug", ["cnv", "dme", "drusen", "normal"])
def test_learn_pages_are_public_and_marked_decision_support(client, db, slug):
    response = client.get(reverse("cases:learn", args=[slug]))
    assert response.status_code == 200
    assert "Decision support, not a diagnosis" in response.content.decode()


def test_learn_page_of_unknown_condition_is_404(client, db):
    assert client.get(reverse("cases:learn", args=["glaucoma"])).status_code == 404


def test_learn_pages_carry_the_recommendations(client, db):
    texts = {slug: client.get(reverse("cases:learn", args=[slug])).content.decode() for slug in ("cnv", "dme", "drusen", "normal")}
    assert "retina specialist" in texts["cnv"] and "Anti-VEGF" in texts["cnv"] and "1–3 months" in texts["cnv"]
    assert "steroid implants" in texts["dme"] and "blood-pressure" in texts["dme"] and "3–6 months" in texts["dme"]
    assert "AREDS2" in texts["drusen"] and "Amsler grid" in texts["drusen"] and "6–12 months" in texts["drusen"]
    assert "Routine eye care" in texts["normal"]


def test_home_page_describes_platform_categories_and_data(client, db):
    html = client.get(reverse("cases:home")).content.decode()
    for text in ("Retinal OCT Analysis Platform", "Why OCT matters", "Key features", "84,495",
                 "Neovascular membrane with subretinal fluid", "Retinal thickening with intraretinal fluid",
                 "Multiple drusen deposits", "Preserved foveal contour without fluid or edema", "tiered expert grading"):
        assert text in html


def test_about_page_names_provenance(client, db):
    html = client.get(reverse("cases:about")).content.decode()
    for text in ("Spectralis", "Shiley Eye Institute", "California Retinal Research Foundation",
                 "Medical Center Ophthalmology Associates", "Shanghai First People", "Beijing Tongren Eye Center",
                 "2013-07-01", "2017-03-01", "Tier 3"):
        assert text in html


def test_clinic_pages_redirect_anonymous_to_sign_in(client, scan):
    for url in clinic_pages(scan) + [reverse("cases:scan_image", args=[scan.pk])]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url
    response = client.post(reverse("cases:scan_upload", args=[scan.case_id]), {"files": [upload("a.png", bscan_bytes())]})
    assert response.status_code == 302 and Scan.objects.count() == 1


@pytest.mark.parametrize("role", NO_RECORDS)
def test_clinic_pages_are_forbidden_to_other_roles(client, scan, role, request):
    client.force_login(request.getfixturevalue(role))
    for url in clinic_pages(scan):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Not allowed" in response.content.decode()
    response = client.post(reverse("cases:scan_upload", args=[scan.case_id]), {"files": [upload("a.png", bscan_bytes())]})
    assert response.status_code == 403
    assert Scan.objects.count() == 1


@pytest.mark.parametrize("role", ["clinician", "admin"])
def test_clinic_pages_render_for_clinic_staff_and_admins(client, scan, role, request):
    client.force_login(request.getfixturevalue(role))
    for url in clinic_pages(scan):
        assert client.get(url).status_code == 200, url


def test_unknown_records_are_404_for_clinicians(client, clinician):
    client.force_login(clinician)
    for name in ("cases:patient_detail", "cases:patient_update", "cases:case_create", "cases:case_detail",
                 "cases:case_update", "cases:scan_detail", "cases:scan_image"):
        response = client.get(reverse(name, args=[999_999]))
        assert response.status_code == 404, name
        assert "Not found" in response.content.decode()


# --- patient list, forms ----------------------------------------------------------------


def test_patient_list_searches_and_pages(client, clinician):
    from tests.factories import PatientFactory

    for i in range(30):
        PatientFactory(identifier=f"P-{i:03d}")
    PatientFactory(identifier="ZZ-TOP")
    client.force_login(clinician)
    first = client.get(reverse("cases:patient_list")).content.decode()
    assert "P-000" in first and "P-024" in first and "P-025" not in first and "Page 1 of 2" in first
    assert "P-025" in client.get(reverse("cases:patient_list") + "?page=2").content.decode()
    found = client.get(reverse("cases:patient_list") + "?q=zz").content.decode()
    assert "ZZ-TOP" in found and "P-001" not in found


def test_patient_create_and_update_through_the_forms(client, clinician):
    client.force_login(clinician)
    response = client.post(reverse("cases:patient_create"), {"identifier": "NEW-1", "sex": "M", "birth_year": "1970", "notes": ""})
    patient = Patient.objects.get(identifier="NEW-1")
    assert response.status_code == 302 and response["Location"] == patient.get_absolute_url()
    assert patient.created_by == clinician
    client.post(reverse("cases:patient_update", args=[patient.pk]), {"identifier": "NEW-1", "sex": "F", "birth_year": "1971", "notes": "x"})
    patient.refresh_from_db()
    assert (patient.sex, patient.birth_year, patient.notes) == ("F", 1971, "x")


def test_patient_form_shows_errors(client, clinician):
    client.force_login(clinician)
    client.post(reverse("cases:patient_create"), {"identifier": "DUP"})
    response = client.post(reverse("cases:patient_create"), {"identifier": "DUP"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Patient.objects.filter(identifier="DUP").count() == 1


def test_case_create_and_update_through_the_forms(client, clinician):
    from tests.factories import PatientFactory

    patient = PatientFactory()
    client.force_login(clinician)
    response = client.post(reverse("cases:case_create", args=[patient.pk]), {"eye": "OS", "exam_date": "2026-03-04", "device": "Spectralis"})
    case = Case.objects.get(patient=patient)
    assert response["Location"] == case.get_absolute_url()
    client.post(reverse("cases:case_update", args=[case.pk]), {"eye": "OS", "exam_date": "2026-03-04", "status": "closed"})
    case.refresh_from_db()
    assert case.status == "closed"


def test_patient_page_lists_cases(client, clinician):
    case = CaseFactory(device="Cirrus")
    client.force_login(clinician)
    html = client.get(case.patient.get_absolute_url()).content.decode()
    assert case.get_absolute_url() in html and "Cirrus" in html


# --- upload through the case page -------------------------------------------------------


def test_upload_form_works_without_javascript(client, clinician):
    case = CaseFactory()
    client.force_login(clinician)
    html = client.get(case.get_absolute_url()).content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert 'type="file" name="files" id="id_files" multiple' in html


def test_upload_reports_accepted_and_rejected_files(client, clinician, media_root):
    case = CaseFactory()
    client.force_login(clinician)
    files = [upload("good1.png", bscan_bytes(seed=1)), upload("good2.jpg", bscan_bytes("JPEG", seed=2)),
             upload("notes.jpg", b"just text"), upload("empty.png", b"")]
    response = client.post(reverse("cases:scan_upload", args=[case.pk]), {"files": files})
    assert response.status_code == 200
    html = response.content.decode()
    assert "2 accepted, 2 rejected." in html
    assert "<strong>notes.jpg</strong>: The file is a text file, not an image." in html
    assert "<strong>empty.png</strong>: The file is empty (0 bytes)." in html
    assert sorted(Scan.objects.values_list("original_name", flat=True)) == ["good1.png", "good2.jpg"]
    assert len(stored_files(media_root)) == 4
    for scan in Scan.objects.all():
        assert scan.status in Scan.Status.values and scan.uploaded_by == clinician


def test_upload_with_everything_rejected_is_400_and_stores_nothing(client, clinician, media_root):
    case = CaseFactory()
    client.force_login(clinician)
    response = client.post(reverse("cases:scan_upload", args=[case.pk]), {"files": [upload("x.gif", bscan_bytes("GIF"))]})
    assert response.status_code == 400
    assert "Unsupported image format GIF" in response.content.decode()
    assert not Scan.objects.exists() and stored_files(media_root) == []


def test_upload_without_files_is_a_clear_error(client, clinician):
    case = CaseFactory()
    client.force_login(clinician)
    response = client.post(reverse("cases:scan_upload", args=[case.pk]), {})
    assert response.status_code == 400
    assert "Choose at least one image to upload." in response.content.decode()


def test_reloading_the_upload_address_goes_back_to_the_case_page(client, clinician):
    case = CaseFactory()
    client.force_login(clinician)
    response = client.get(reverse("cases:scan_upload", args=[case.pk]))
    assert response.status_code == 302 and response["Location"] == case.get_absolute_url()


def test_case_page_lists_scans_with_status_and_partials(client, clinician):
    scan = ScanFactory()
    client.force_login(clinician)
    html = client.get(scan.case.get_absolute_url()).content.decode()
    assert scan.original_name in html and scan.get_status_display() in html
    assert reverse("cases:scan_thumbnail", args=[scan.pk]) in html  # a small cached preview, not the full image


# --- scan page ------------------------------------------------------------------------


def test_scan_page_has_viewer(client, clinician):
    scan = ScanFactory()
    client.force_login(clinician)
    html = client.get(scan.get_absolute_url()).content.decode()
    assert "data-viewer" in html and "js/viewer.js" in html
    assert "data-viewer-brightness" in html and "data-viewer-contrast" in html
    assert "data-viewer-overlay-toggle" in html


def test_scan_page_hides_source_label_from_an_ungraded_tier2_grader_in_reading_centre_mode(
    client, user_factory, settings
):
    scan = ScanFactory(source_label="DRUSEN", source_label_origin="dataset folder")
    # Clinic staff who also grade at tier 2: the study's blinding wins on the scan page.
    client.force_login(user_factory("clin-grader", Role.CLINICIAN, Role.GRADER_T2))
    settings.VERIFICATION_READING_CENTRE_MODE = False
    assert "<dt>Source label</dt><dd>Drusen (early AMD)" in client.get(scan.get_absolute_url()).content.decode()
    settings.VERIFICATION_READING_CENTRE_MODE = True
    # (The verification panel applies the same rule itself; this checks the scan facts.)
    assert "<dt>Source label</dt>" not in client.get(scan.get_absolute_url()).content.decode()


# --- private images -------------------------------------------------------------------


@pytest.mark.parametrize("role", GRADERS + ["clinician", "admin"])
def test_scan_image_is_served_privately_to_allowed_roles(client, scan, role, request):
    client.force_login(request.getfixturevalue(role))
    response = client.get(reverse("cases:scan_image", args=[scan.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_scan_image_is_forbidden_without_a_role(client, scan, no_role_user):
    client.force_login(no_role_user)
    assert client.get(reverse("cases:scan_image", args=[scan.pk])).status_code == 403


def test_original_image_is_downloadable(client, clinician, case):
    from cases import services

    data = bscan_bytes("JPEG")
    scan = services.scan_register(case=case, file=upload("orig.jpg", data), uploaded_by=clinician)
    client.force_login(clinician)
    response = client.get(reverse("cases:scan_image", args=[scan.pk]) + "?original=1")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert "orig.jpg" in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == data


def test_no_public_media_url(client, scan):
    assert client.get("/media/" + scan.image.name).status_code == 404


def test_every_image_view_is_recorded_in_the_audit_trail(client, scan, grader_t2, clinician):
    url = reverse("cases:scan_image", args=[scan.pk])
    client.force_login(grader_t2)
    b"".join(client.get(url).streaming_content)
    client.force_login(clinician)
    b"".join(client.get(url + "?original=1").streaming_content)
    entries = LogEntry.objects.get_for_object(scan).filter(action=LogEntry.Action.ACCESS)
    assert entries.count() == 2
    assert {e.actor for e in entries} == {grader_t2, clinician}


def test_graders_cannot_download_the_uploaded_bytes(client, scan, grader_t1, grader_t2, grader_t3):
    url = reverse("cases:scan_image", args=[scan.pk]) + "?original=1"
    for grader in (grader_t1, grader_t2, grader_t3):
        client.force_login(grader)
        assert client.get(url).status_code == 403
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()


def test_refused_image_view_is_not_recorded(client, scan, no_role_user):
    client.force_login(no_role_user)
    client.get(reverse("cases:scan_image", args=[scan.pk]))
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()


def test_record_changes_are_audited(client, clinician):
    client.force_login(clinician)
    client.post(reverse("cases:patient_create"), {"identifier": "AUD-1"})
    patient = Patient.objects.get(identifier="AUD-1")
    entry = LogEntry.objects.get_for_object(patient).get()
    assert entry.action == LogEntry.Action.CREATE and entry.actor == clinician


# --- navigation and sign-out ------------------------------------------------------------


def test_navigation_depends_on_role(client, clinician, grader_t1):
    client.force_login(clinician)
    assert reverse("cases:patient_list") in client.get(reverse("cases:home")).content.decode()
    client.force_login(grader_t1)
    assert reverse("cases:patient_list") not in client.get(reverse("cases:home")).content.decode()


def test_sign_out_is_a_post_form(client, clinician):
    client.force_login(clinician)
    html = client.get(reverse("cases:home")).content.decode()
    assert f'<form method="post" action="{reverse("logout")}">' in html
    response = client.post(reverse("logout"), {"next": reverse("cases:home")})
    assert response.status_code == 302 and response["Location"] == reverse("cases:home")
    assert client.get(reverse("cases:patient_list")).status_code == 302


@pytest.mark.parametrize("role", ["clinician", "grader_t1"])
def test_sign_in_lands_on_a_page_every_role_may_see(client, role, request, db):
    user = request.getfixturevalue(role)
    page = client.get(reverse("login")).content.decode()
    assert 'name="next"' not in page  # no forced next: each role's start page (tests/clinic)
    response = client.post(reverse("login"), {"username": user.username, "password": "pw-" + user.username},
                           follow=True)
    assert response.status_code == 200 and response.context["user"] == user


def test_domain_errors_render_their_field_messages(client, clinician, monkeypatch):
    from octportal.errors import DomainError

    def refuse(**kwargs):
        raise DomainError("Refused.", errors={"identifier": ["Bad identifier."]})

    monkeypatch.setattr("intake.services.scans_upload", refuse)
    client.force_login(clinician)
    response = client.post(reverse("cases:scan_upload", args=[CaseFactory().pk]), {})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Refused." in html and "<strong>identifier</strong>: Bad identifier." in html


def test_missing_image_file_is_404_not_a_crash(client, clinician, scan):
    scan.image.storage.delete(scan.image.name)
    client.force_login(clinician)
    assert client.get(reverse("cases:scan_image", args=[scan.pk])).status_code == 404


def test_patient_list_page_queries_do_not_grow_with_rows(client, clinician, django_assert_max_num_queries):
    from tests.factories import PatientFactory

    for _ in range(20):
        CaseFactory(patient=PatientFactory())
    client.force_login(clinician)
    with django_assert_max_num_queries(8):
        assert client.get(reverse("cases:patient_list")).status_code == 200


def test_without_kept_uploads_the_original_download_is_a_clear_404(client, clinician, case, settings):
    settings.OCT_KEEP_UPLOADED_FILES = False
    from intake.services import scan_submit
    from tests.cases.conftest import upload
    from tests.factories import bscan_bytes

    scan = scan_submit(case=case, file=upload("eye.png", bscan_bytes("PNG", 160, 128)), uploaded_by=clinician)
    client.force_login(clinician)
    response = client.get(reverse("cases:scan_image", args=[scan.pk]) + "?original=1")
    assert response.status_code == 404
    assert "does not keep uploaded files" in response.content.decode()
    assert "Download original" not in client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()
