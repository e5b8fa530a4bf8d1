"""Issue 14: the examination report PDF (WeasyPrint), read back as text; the sign-off locks
it and a later change makes a new version."""
from __future__ import annotations

import io

import numpy as np
import pytest
from django.urls import reverse
from pypdf import PdfReader

from cases.models import Scan
from octportal.errors import Conflict, Forbidden
from tests.clinic.conftest import read_scan, verify
from tests.factories import ScanFactory
from tests.inference.support import make_prediction, png_bytes
from verification import reports
from verification.models import ReportVersion

pytestmark = pytest.mark.django_db


def pdf_text(data: bytes) -> str:
    """The PDF's text with whitespace collapsed (table cells wrap lines anywhere)."""
    reader = PdfReader(io.BytesIO(data))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def pdf_images(data: bytes) -> int:
    return sum(len(page.images) for page in PdfReader(io.BytesIO(data)).pages)


@pytest.fixture
def case_with_readings(version, grader_t3):
    urgent = ScanFactory(status=Scan.Status.ANALYSED, original_name="macula-1.png")
    make_prediction(urgent, version, "CNV", confidence=0.9996, heatmap=png_bytes(64, 48, "RGB"))
    normal = read_scan("NORMAL", version=version, case=urgent.case, original_name="macula-2.png")
    verify(normal, "DRUSEN", grader_t3)
    read_scan("CNV", gate_passed=False, case=urgent.case, original_name="photo.png")
    return urgent.case


@pytest.mark.parametrize("who,expected", [(None, 302), ("grader_t3", 403), ("clinician", 200)])
def test_report_permissions(client, request, case_with_readings, who, expected):
    if who:
        client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("cases:case_report", args=[case_with_readings.pk])).status_code == expected


def test_draft_report_says_readings_verification_referral_and_disclaimer(client, clinician, case_with_readings):
    client.force_login(clinician)
    response = client.get(reverse("cases:case_report", args=[case_with_readings.pk]))
    assert response["Content-Type"] == "application/pdf" and response.content.startswith(b"%PDF")
    text = pdf_text(response.content)
    patient = case_with_readings.patient.identifier
    for expected in (
        "OCT examination report", patient, "DRAFT", "macula-1.png", "macula-2.png",
        "Choroidal neovascularization (CNV)", ">99.9%", "Urgent referral", "octnet v1.0",
        "Verified: Drusen (early AMD)", "grader3", "Differs from the model's reading",
        "Not read", "Decision support, not a diagnosis", "Key B-scans", "not signed",
    ):
        assert expected in text, expected
    assert "100%" not in text and "100.0%" not in text
    # Key B-scans: the two read scans, the urgent one with its heatmap too.
    assert pdf_images(response.content) >= 3


def test_a_key_bscan_whose_reading_kept_only_its_heatmap_grid_shows_the_heatmap(client, clinician, version):
    """Readings made since heatmaps are drawn on demand have no overlay file until one is
    asked for: the report draws it from the grid (and stores nothing)."""
    client.force_login(clinician)
    images = {}
    for kind in ("grid", "none"):
        scan = ScanFactory(status=Scan.Status.ANALYSED, original_name=f"{kind}.png")
        grid = np.full((124, 128), 0.9) if kind == "grid" else None
        prediction = make_prediction(scan, version, "CNV", confidence=0.95, heatmap_grid=grid)
        images[kind] = pdf_images(client.get(reverse("cases:case_report", args=[scan.case.pk])).content)
        if kind == "grid":
            assert not prediction.heatmap.storage.exists(prediction.heatmap.name)
    assert images["grid"] == images["none"] + 1


def test_a_low_confidence_reading_says_so_in_the_report_with_its_reasons(client, clinician, version):
    scan = ScanFactory(status=Scan.Status.ANALYSED, original_name="noisy.png")
    make_prediction(scan, version, "DME", confidence=0.6, low_confidence=True,
                    reasons=("noisy image", "uncertain between DME and CNV"))
    read_scan("NORMAL", version=version, case=scan.case, original_name="fine.png")
    client.force_login(clinician)
    text = pdf_text(client.get(reverse("cases:case_report", args=[scan.case.pk])).content)
    assert text.count("Low confidence") == 1
    assert "needs review: noisy image; uncertain between DME and CNV" in text


def test_signing_locks_the_report_and_a_change_makes_a_new_version(client, clinician, case_with_readings, grader_t3):
    client.force_login(clinician)
    sign = reverse("cases:case_report_sign", args=[case_with_readings.pk])
    report = reverse("cases:case_report", args=[case_with_readings.pk])
    assert client.post(sign).status_code == 302
    v1 = ReportVersion.objects.get(case=case_with_readings)
    assert v1.number == 1 and v1.signed_by == clinician
    signed = client.get(report).content
    text = pdf_text(signed)
    assert "Signed off by clinician" in text and "report version 1" in text and "DRAFT" not in text
    assert client.get(report).content == signed  # the stored PDF, not a re-rendering
    with pytest.raises(Conflict):
        reports.report_sign(case=case_with_readings, user=clinician)

    # A verification after signing: the signed version stays, the report is a draft again.
    first = case_with_readings.scans.get(original_name="macula-1.png")
    verify(first, "CNV", grader_t3)
    page = client.get(case_with_readings.get_absolute_url()).content.decode()
    assert "Changed since version 1 was signed" in page and "Sign report (version 2)" in page
    assert "changed after version 1 was signed" in pdf_text(client.get(report).content)
    assert client.post(sign).status_code == 302
    assert list(case_with_readings.report_versions.values_list("number", flat=True)) == [2, 1]
    assert "report version 2" in pdf_text(client.get(report).content)
    assert client.get(report + "?version=1").content == signed
    assert client.get(report + "?version=9").status_code == 404


def test_case_page_offers_the_report_to_view_and_to_download(client, clinician, case_with_readings):
    # A browser with a PDF viewer shows an inline PDF and never saves it: the second link
    # downloads it (under the name the response gives, signed version included).
    client.force_login(clinician)
    html = client.get(case_with_readings.get_absolute_url()).content.decode()
    url = reverse("cases:case_report", args=[case_with_readings.pk])
    assert f'href="{url}" data-report-pdf>' in html
    assert f'href="{url}" download data-report-download>Download</a>' in html


def test_signed_versions_are_never_edited(clinician, case_with_readings):
    version = reports.report_sign(case=case_with_readings, user=clinician)
    with pytest.raises(ValueError):
        version.save()


def test_only_clinic_staff_sign(grader_t3, case_with_readings):
    with pytest.raises(Forbidden):
        reports.report_sign(case=case_with_readings, user=grader_t3)


def test_rendering_a_report_leaves_pillows_truncated_image_guard_off(clinician, case_with_readings):
    from PIL import ImageFile

    reports.report_pdf(data=reports.report_data(case=case_with_readings, user=clinician))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("status", [Scan.Status.RECEIVED, Scan.Status.QUEUED, Scan.Status.RUNNING])
def test_a_report_is_not_signed_while_a_scan_waits_for_its_reading(client, clinician, case_with_readings, status):
    ScanFactory(case=case_with_readings, status=status)
    state = reports.report_state(case=case_with_readings, user=clinician)
    assert state.pending == 1 and not state.signable
    with pytest.raises(Conflict, match="1 B-scan is still being read"):
        reports.report_sign(case=case_with_readings, user=clinician)
    assert not ReportVersion.objects.exists()
    client.force_login(clinician)
    page = client.get(reverse("cases:case_detail", args=[case_with_readings.pk])).content.decode()
    assert "data-report-pending" in page and "data-report-sign" not in page
    # Once read (or failed: a final state), it may be signed.
    case_with_readings.scans.filter(status=status).update(status=Scan.Status.FAILED)
    assert reports.report_sign(case=case_with_readings, user=clinician).number == 1
