"""Independent tier 2 grading and patient privacy, end to end.

A tier 2 grader who has not yet graded a scan tries every way we know to learn the
model's reading, the current label, another grader's grade or the uploaded file
name: pages, API fields, images, heatmaps, worklist order, badges and counts, in
both modes. Then a scan whose file name and metadata carry a name, a birth date and
a record number goes through grading, and none of them may reach a grader, an
export, a log line or an API answer to a grader.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image, PngImagePlugin

from cases.diagnoses import Diagnosis
from cases.models import Scan
from intake.services import scan_submit
from tests.factories import CaseFactory, ScanFactory, bscan_image
from tests.inference.support import make_prediction
from verification import services
from verification.exports import patient_pseudonym

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}
FILE_NAME = "SMITH_JOHN_MRN12345_1952-03-04.jpg"
PHI = ("SMITH", "John", "MRN12345", "12345", "1952-03-04", "1952")


def phi_jpeg() -> bytes:
    """A B-scan whose EXIF carries a name, birth date and record number."""
    img = bscan_image(256, 200, seed=3)
    exif = Image.Exif()
    exif[0x010E] = "Patient: John SMITH, DOB 1952-03-04, MRN 12345"  # ImageDescription
    exif[0x013B] = "John SMITH"  # Artist
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


def phi_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Patient: John SMITH, DOB 1952-03-04, MRN 12345")
    buf = io.BytesIO()
    bscan_image(256, 200, seed=4).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def body(response) -> str:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode("latin-1")
    return response.content.decode("latin-1")


def assert_no_phi(text: str, where: str) -> None:
    for needle in PHI:
        assert needle not in text, f"{needle!r} leaked through {where}"


@pytest.fixture
def uploaded(clinician, settings, django_capture_on_commit_callbacks):
    """A scan uploaded with an identifying file name and EXIF, read by the model as DME
    (urgent), labelled CNV at the source, accepted by tier 1."""
    settings.OCT_KEEP_UPLOADED_FILES = True  # even where the clinic keeps the bytes
    scan = scan_submit(
        case=CaseFactory(), file=SimpleUploadedFile(FILE_NAME, phi_jpeg()), uploaded_by=clinician,
        source_label=Diagnosis.CNV, source_label_origin=f"referral letter {FILE_NAME}",
    )
    Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.ANALYSED)
    scan.refresh_from_db()
    make_prediction(scan, predicted=Diagnosis.DME, confidence=0.93, heatmap=phi_png())
    return scan


def leaks_for(client, api_client, grader, scan) -> list[tuple[str, str]]:
    """Everything a tier 2 grader can fetch about ``scan``, as (where, text)."""
    client.force_login(grader)
    api_client.force_authenticate(grader)
    pages = {
        "worklist page": reverse("verification:worklist", args=[2]),
        "grading page": reverse("verification:grade", args=[scan.pk, 2]),
        "status JSON": reverse("inference:scan_status", args=[scan.pk]),
    }
    api = {
        "worklist API": reverse("verification-api:worklist", args=[2]),
        "review API": reverse("verification-api:review", args=[scan.pk]),
        "scan API": reverse("cases-api:scan_detail", args=[scan.pk]),
        "prediction API": reverse("inference-api:scan_prediction", args=[scan.pk]),
    }
    out = [(name, body(client.get(url))) for name, url in pages.items()]
    out += [(name, body(api_client.get(url))) for name, url in api.items()]
    return out


@pytest.mark.parametrize("centre_mode", [True, False], ids=["reading-centre (default)", "confirm-or-correct"])
def test_tier2_before_grading_learns_no_file_name_other_grade_or_identifier(
    centre_mode, settings, client, api_client, uploaded, grader_t1, grader_t2, grader_t2b
):
    settings.VERIFICATION_READING_CENTRE_MODE = centre_mode
    services.quality_submit(scan=uploaded, grader=grader_t1, accept=True)
    services.grade_submit(scan=uploaded, grader=grader_t2b, label=Diagnosis.DRUSEN, findings=NO_FINDINGS,
                          confidence=2, comment="my-private-remark")
    for where, text in leaks_for(client, api_client, grader_t2, uploaded):
        assert_no_phi(text, where)
        assert "my-private-remark" not in text and grader_t2b.username not in text, where
    review = api_client.get(reverse("verification-api:review", args=[uploaded.pk])).json()
    assert [g["tier"] for g in review["grades"]] == [1]
    scan_api = api_client.get(reverse("cases-api:scan_detail", args=[uploaded.pk])).json()
    assert scan_api["original_name"] == uploaded.code and scan_api["original_url"] is None


def test_tier2_before_grading_learns_nothing_of_the_model_or_the_label_by_default(
    client, api_client, uploaded, grader_t1, grader_t2
):
    services.quality_submit(scan=uploaded, grader=grader_t1, accept=True)
    # The label choices of the form name every class; what must not appear is what the
    # model or the source said about this scan.
    needles = ("93.0", "0.93", "Urgent referral", '"urgent"', "vf-model", "vf-reference", 'data-reference="C',
               'data-reference="D', "referral letter", "Model (", '"predicted"', '"source_label":"CNV"',
               "Most urgent", "heatmap.png")
    for where, text in leaks_for(client, api_client, grader_t2, uploaded):
        for needle in needles:
            assert needle not in text, f"{needle!r} in {where}"
    client.force_login(grader_t2)
    assert client.get(reverse("inference:heatmap", args=[uploaded.pk])).status_code == 404
    assert "vf-urgent" not in body(client.get(reverse("verification:worklist", args=[2])))
    api_client.force_authenticate(grader_t2)
    assert api_client.get(reverse("inference-api:scan_prediction", args=[uploaded.pk])).status_code == 403
    items = api_client.get(reverse("verification-api:worklist", args=[2])).json()["results"]
    assert [i["model_urgent"] for i in items] == [None]


def test_the_low_confidence_flag_is_blinded_like_the_reading(
    client, api_client, clinician, grader_t1, grader_t2
):
    """The flag and its reasons say something of the model's reading ("uncertain between
    CNV and DME"): a tier 2 grader sees them only once the reading itself is visible."""
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, predicted=Diagnosis.DME, confidence=0.5, low_confidence=True,
                    reasons=("uncertain between DME and CNV", "noisy image"))
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    needles = ("Low confidence", "low_confidence", "low-confidence", "needs review", "quality_score",
               "quality score", "uncertain between", "noisy image")
    for where, text in leaks_for(client, api_client, grader_t2, scan):
        for needle in needles:
            assert needle not in text, f"{needle!r} in {where}"
    # Once graded, tier 2 sees the reading and its flag, as clinic staff do all along.
    services.grade_submit(scan=scan, grader=grader_t2, label=Diagnosis.DME, findings=NO_FINDINGS, confidence=3)
    client.force_login(grader_t2)
    html = client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    assert "Low confidence — needs review" in html and "uncertain between DME and CNV" in html
    api_client.force_authenticate(grader_t2)
    review = api_client.get(reverse("verification-api:review", args=[scan.pk])).json()
    assert review["reference"]["model"]["low_confidence"] is True
    client.force_login(clinician)
    assert "Low confidence — needs review" in client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()


def test_tier2_worklist_order_does_not_follow_the_model(settings, client, grader_t1, grader_t2, grader_t3):
    older, newer = ScanFactory(), ScanFactory()
    Scan.objects.filter(pk=older.pk).update(uploaded_at=timezone.now() - timedelta(hours=1))
    make_prediction(older, predicted=Diagnosis.NORMAL)
    make_prediction(newer, predicted=Diagnosis.CNV)  # urgent
    for s in (older, newer):
        services.quality_submit(scan=s, grader=grader_t1, accept=True)
    client.force_login(grader_t2)
    page = body(client.get(reverse("verification:worklist", args=[2])))
    assert page.index(f"#{older.pk} ") < page.index(f"#{newer.pk} ")
    assert "oldest first" in page
    # In "confirm or correct" mode, and for tier 3, urgent work comes first as before.
    settings.VERIFICATION_READING_CENTRE_MODE = False
    page = body(client.get(reverse("verification:worklist", args=[2])))
    assert page.index(f"#{newer.pk} ") < page.index(f"#{older.pk} ")


def test_after_grading_tier2_sees_the_reading_and_tier3_always_does(
    client, api_client, uploaded, grader_t1, grader_t2, grader_t3
):
    services.quality_submit(scan=uploaded, grader=grader_t1, accept=True)
    services.grade_submit(scan=uploaded, grader=grader_t2, label=Diagnosis.CNV, findings=NO_FINDINGS, confidence=4)
    api_client.force_authenticate(grader_t2)
    assert api_client.get(reverse("inference-api:scan_prediction", args=[uploaded.pk])).status_code == 200
    api_client.force_authenticate(grader_t3)
    review = api_client.get(reverse("verification-api:review", args=[uploaded.pk])).json()
    assert review["reference"]["label"] == Diagnosis.CNV and review["reference"]["model"]["predicted"] == "DME"


def test_identifying_file_name_and_metadata_reach_no_grader_export_log_or_api(
    client, api_client, uploaded, clinician, grader_t1, grader_t2, grader_t2b, grader_t3, caplog
):
    caplog.set_level(logging.DEBUG)
    graders = (grader_t1, grader_t2, grader_t2b, grader_t3)
    # What a grader is served: the stored image and the heatmap carry no metadata.
    for grader in graders:
        client.force_login(grader)
        image = client.get(reverse("cases:scan_image", args=[uploaded.pk]))
        assert image.status_code == 200 and FILE_NAME not in image["Content-Disposition"]
        data = b"".join(image.streaming_content)
        assert_no_phi(data.decode("latin-1"), "stored image")
        assert Image.open(io.BytesIO(data)).info.get("exif") is None
        assert client.get(reverse("cases:scan_image", args=[uploaded.pk]) + "?original=1").status_code == 403
    # Grading, tier by tier, through the API.
    api_client.force_authenticate(grader_t1)
    url = reverse("verification-api:grade_submit", args=[uploaded.pk])
    assert api_client.post(url, {"tier": 1, "decision": "accept"}, format="json").status_code == 201
    for g in (grader_t2, grader_t2b):
        api_client.force_authenticate(g)
        grade = {"tier": 2, "label": "CNV", "cnv": True, "macular_edema": False, "drusen": False, "other": False,
                 "confidence": 4}
        response = api_client.post(url, grade, format="json")
        assert response.status_code == 201
        assert_no_phi(json.dumps(response.json()), "grade API answer")
    api_client.force_authenticate(grader_t3)
    assert api_client.post(url, {"tier": 3, "label": "CNV"}, format="json").status_code == 201
    for grader in graders:
        for where, text in leaks_for(client, api_client, grader, uploaded):
            assert_no_phi(text, f"{where} for {grader.username}")
    # Exports: the page's downloads and the API's (/api/v1/verification/exports/) alike.
    client.force_login(grader_t3)
    api_client.force_authenticate(grader_t3)
    for where, get, csv_url, zip_url in (
        ("page", client.get, reverse("verification:export_csv"), reverse("verification:export_zip")),
        ("API", api_client.get, reverse("v1:verification-api:export_csv"), reverse("v1:verification-api:export_zip")),
    ):
        csv_text = body(get(csv_url))
        assert_no_phi(csv_text, f"CSV export ({where})")
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert len(rows) == 1 and rows[0]["final_label"] == "CNV" and "original_name" not in rows[0]
        assert rows[0]["patient_pseudonym"] == patient_pseudonym(uploaded.case.patient.identifier)
        assert uploaded.case.patient.identifier not in csv_text and uploaded.code not in csv_text
        zipped = zipfile.ZipFile(io.BytesIO(b"".join(get(zip_url).streaming_content)))
        assert len(zipped.namelist()) == 2  # the image and MANIFEST.csv
        for info in zipped.infolist():
            assert_no_phi(info.filename, f"ZIP entry name ({where})")
            assert uploaded.case.patient.identifier not in info.filename
            content = zipped.read(info)
            assert_no_phi(content.decode("latin-1"), f"ZIP entry {info.filename} ({where})")
            assert uploaded.case.patient.identifier not in content.decode("latin-1")
            if info.filename.endswith(".png"):
                assert Image.open(io.BytesIO(content)).info == {}
    # Logs and the audit trail's text.
    assert_no_phi("\n".join(r.getMessage() for r in caplog.records), "log output")
    for entry in LogEntry.objects.all():
        assert_no_phi(f"{entry.object_repr} {entry.changes}", "audit trail")
