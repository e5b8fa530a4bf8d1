"""End to end, issue 14: one walk through the clinic in Chromium, with the real model.

A clinician uploads B-scans through the examination page and the shipped model reads them:
on PostgreSQL a real ``celery worker`` process does, consuming from Redis (the uploads'
tasks are published, not run eagerly; tests/integration/workers.py); on SQLite the app's
own task path runs in process (eager). Graders of tier 1, tier 2 (two, independently) and
tier 3 verify one urgent scan through their pages; the clinician finds every urgent result
on the start page, opens one, sees the verified label with its verifier and time on the
scan and examination pages, signs the report and downloads the PDF. Explore's class and
urgency filters return exactly the scans the database says. Every page walked is shot at
390, 768 and 1366 px under ``var/artefacts/clinic-walk/`` and must not scroll sideways.

Needs the real images (``OCT_DATA_DIR``) and the shipped model: the readings are real. On
PostgreSQL also Redis (``CELERY_TEST_BROKER_URL``); without it the walk skips with the
reason, or fails under ``OCT_REQUIRE_SERVICES=1``.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from cases.diagnoses import Diagnosis, Urgency
from cases.models import Scan
from cases.roles import Role
from inference.selectors import predictions_current_by_scan
from intake.services import scan_submit
from tests import browser
from tests.browser import requires_chromium
from tests.conftest import oct_data_dir
from tests.factories import CaseFactory, PatientFactory
from tests.inference.support import WEIGHTS_DIR
from tests.integration.workers import ON_POSTGRES, statuses, wait_for
from verification.models import Grade, ReportVersion, Review

pytestmark = [pytest.mark.e2e, requires_chromium]

ARTEFACTS = browser.ARTEFACTS / "clinic-walk"
# From the model card's fixed sample (inference/weights/fixed_sample.tsv, never trained
# on): the shipped model reads each as its folder's class with confidence above 0.95.
UPLOADED = ("CNV/CNV-3616460-1.jpeg", "DME/DME-5768195-1.jpeg", "DRUSEN/DRUSEN-1487749-1.jpeg",
            "NORMAL/NORMAL-49105-1.jpeg")
SUBMITTED = ("CNV/CNV-7954652-1.jpeg", "DME/DME-9066695-1.jpeg", "NORMAL/NORMAL-2010714-1.jpeg")


def _image(name: str) -> Path:
    path = oct_data_dir() / "kermany" / name
    if not path.is_file() or not any(WEIGHTS_DIR.glob("*.onnx")):
        pytest.skip(f"needs the real OCT images ({path}; set OCT_DATA_DIR) and the shipped model")
    return path


def check_fits(page, name: str) -> None:
    browser.check_fits(page, ARTEFACTS, name)


def _current(scans) -> dict[int, object]:
    return predictions_current_by_scan(scan_ids=[s.pk for s in scans])


def _read(scans, worker) -> None:
    """Wait for the readings: at once in process (eager), a few seconds from the worker."""
    ids = [s.pk for s in scans]
    log = f"; log {worker.log}" if worker else ""
    wait_for(lambda: statuses(ids).get(Scan.Status.ANALYSED, 0) == len(ids), timeout=120, interval=0.2,
             what=f"{len(ids)} scans read (now {statuses(ids)}{log})")


def _shown(page, attribute: str) -> set[int]:
    return {int(x) for x in page.locator(f"[data-{attribute}]").evaluate_all(
        f"els => els.map(e => e.getAttribute('data-{attribute}'))")}


@pytest.fixture
def walk(live_url, user_factory, tmp_path, settings, request):
    """The users, an examination to upload into and a second patient whose scans were
    submitted through ``intake.services.scan_submit`` and read by the real model, and the
    worker that reads them (on PostgreSQL; None on SQLite, where they are read in process)."""
    paths = [_image(n) for n in UPLOADED + SUBMITTED]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VERIFICATION_READING_CENTRE_MODE = True
    # After MEDIA_ROOT: the worker stores the heatmaps where the live server reads them.
    worker = request.getfixturevalue("reading_worker") if ON_POSTGRES else None
    users = {
        "clinician": user_factory("clinician", Role.CLINICIAN),
        "grader1": user_factory("grader1", Role.GRADER_T1),
        "grader2a": user_factory("grader2a", Role.GRADER_T2),
        "grader2b": user_factory("grader2b", Role.GRADER_T2),
        "grader3": user_factory("grader3", Role.GRADER_T3),
    }
    case = CaseFactory(patient=PatientFactory(identifier="WALK-0001"), eye="OD", device="Heidelberg Spectralis")
    other = CaseFactory(patient=PatientFactory(identifier="WALK-0002"), eye="OS", device="Topcon Maestro (walk)")
    submitted = []
    for path in paths[len(UPLOADED):]:
        handle = io.BytesIO(path.read_bytes())
        handle.name = path.name
        submitted.append(scan_submit(case=other, file=handle, uploaded_by=users["clinician"]))
    _read(submitted, worker)
    return {"users": users, "case": case, "other": other, "uploads": paths[:len(UPLOADED)], "submitted": submitted,
            "worker": worker}


def test_clinician_uploads_graders_verify_and_the_clinician_signs_the_verified_report(live_url, browser_page, walk):
    page, base, case = browser_page, live_url, walk["case"]
    page.set_default_timeout(60_000)  # a long walk, with the model, on a shared machine

    # The clinician uploads four B-scans; the model reads them (the worker, on PostgreSQL).
    browser.sign_in(page, base, "clinician")
    page.goto(base + case.get_absolute_url())
    page.set_input_files("#id_files", [str(p) for p in walk["uploads"]])
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report")
    assert "4 accepted, 0 rejected." in page.locator("#upload-report").inner_text()
    check_fits(page, "01-upload-report")
    uploaded = {s.original_name: s for s in Scan.objects.filter(case=case)}
    _read(uploaded.values(), walk["worker"])
    readings = _current(list(uploaded.values()) + walk["submitted"])
    assert len(readings) == 7 and all(p.gate_passed for p in readings.values())
    for name in UPLOADED:
        assert readings[uploaded[name.split("/")[1]].pk].predicted == name.split("/")[0]
    if walk["worker"]:  # the submitted scans' tasks and the upload's at least
        assert walk["worker"].succeeded("inference.tasks.predict_") >= 2, f"not read by the worker ({walk['worker'].log})"
    target = uploaded[UPLOADED[0].split("/")[1]]  # the CNV: an urgent referral
    page.context.clear_cookies()

    # Tier 1 accepts its quality from the worklist.
    browser.sign_in(page, base, "grader1")
    page.wait_for_url(base + "/verification/worklist/1/")
    check_fits(page, "02-worklist-1")
    page.click(f'a[href="/verification/scans/{target.pk}/tier/1/"]')
    page.wait_for_selector("#grading-form")
    check_fits(page, "03-grade-1")
    page.check('input[name=decision][value="accept"]')
    page.click('#grading-form button[value="stay"]')
    page.wait_for_url(base + "/verification/worklist/1/")
    assert Review.objects.get(scan=target).stage == Review.Stage.GRADING
    page.context.clear_cookies()

    # Two tier 2 graders grade it independently: the second sees the viewer's tools and
    # nothing blinded (no reading, no heatmap, no file name, not the first one's grade).
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    for number, grader in enumerate(("grader2a", "grader2b"), start=1):
        browser.sign_in(page, base, grader)
        page.wait_for_url(base + "/verification/worklist/2/")
        page.click(f'a[href="/verification/scans/{target.pk}/tier/2/"]')
        page.wait_for_selector("#grading-form")
        page.wait_for_function("() => document.querySelector('[data-viewer-image]').naturalWidth > 0")
        if grader == "grader2b":
            _assert_blinded_grader_page(page, target, readings[target.pk])
            assert not [u for u in requested if "/analysis/" in u]
            check_fits(page, "04-grade-2-blinded")
        page.check('#grading-form input[name=label][value="CNV"]')
        page.check("#id_cnv")
        page.click('#grading-form button[value="stay"]')
        page.wait_for_url(base + "/verification/worklist/2/")
        assert Grade.objects.current().filter(scan=target, tier=2).count() == number
        page.context.clear_cookies()
    assert Review.objects.get(scan=target).stage == Review.Stage.VERIFICATION

    # Tier 3 verifies the label.
    browser.sign_in(page, base, "grader3")
    page.wait_for_url(base + "/verification/worklist/3/")
    page.click(f'a[href="/verification/scans/{target.pk}/tier/3/"]')
    page.wait_for_selector("#grading-form")
    assert page.locator("[data-viewer-overlay-control]").is_visible()  # tier 3 is not blinded
    check_fits(page, "05-grade-3")
    page.check('#grading-form input[name=label][value="CNV"]')
    page.click('#grading-form button[value="stay"]')
    page.wait_for_url(base + "/verification/worklist/3/")
    review = Review.objects.select_related("verified_by").get(scan=target)
    assert (review.stage, review.final_label, review.verified_by.username) == (Review.Stage.VERIFIED, "CNV", "grader3")
    when = f"{review.verified_at:%Y-%m-%d %H:%M}"  # TIME_ZONE is UTC
    page.context.clear_cookies()

    # The clinician's start page lists exactly the urgent results.
    browser.sign_in(page, base, "clinician")
    page.wait_for_url(base + "/home/")
    urgent = {pk for pk, p in readings.items() if p.urgency == Urgency.URGENT}
    assert len(urgent) == 4 and target.pk in urgent  # a CNV and a DME in each examination
    assert _shown(page, "urgent-scan") == urgent
    check_fits(page, "06-home")

    # It opens the verified one: the scan page shows the label, who verified it and when.
    page.click(f'[data-urgent-scan="{target.pk}"] .result-title a')
    page.wait_for_url(f"**/scans/{target.pk}/")
    panel = page.locator(".vf-panel").inner_text()
    assert "Final label: Choroidal neovascularization (CNV)" in panel
    assert f"verified by grader3, {when}" in panel
    check_fits(page, "07-scan-verified")

    # So does the examination page, on the scan's row.
    page.click(f'.breadcrumbs a[href="{case.get_absolute_url()}"]')
    page.wait_for_url(base + case.get_absolute_url())
    row = page.locator("tbody tr", has=page.locator(f'a[href="{target.get_absolute_url()}"]')).first
    verified = row.locator("td").last.inner_text()
    assert "CNV" in verified and f"grader3, {when}" in verified
    assert "Not signed yet" in page.locator("#report").inner_text()

    # Sign, then download the signed PDF.
    with page.expect_navigation():
        page.click("[data-report-sign]")
    signed = ReportVersion.objects.get(case=case)
    signature = f"Signed, version 1, by clinician on {signed.signed_at:%Y-%m-%d %H:%M}"
    assert signature in page.locator("#report").inner_text()
    assert page.locator("[data-report-sign]").count() == 0
    check_fits(page, "08-case-signed")
    with page.expect_download() as info:
        page.click("[data-report-download]")
    download = info.value
    pdf = Path(download.path()).read_bytes()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    download.save_as(ARTEFACTS / "report-v1.pdf")
    assert pdf.startswith(b"%PDF")
    assert download.suggested_filename == f"oct-report-WALK-0001-{case.exam_date:%Y%m%d}-v1.pdf"
    text = " ".join(_pdf_text(pdf).split())
    assert f"Verified: Choroidal neovascularization (CNV) by grader3, {when}" in text
    assert f"Signed off by clinician on {signed.signed_at:%Y-%m-%d %H:%M} UTC · report version 1" in text


def _pdf_text(data: bytes) -> str:
    return "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)


def _assert_blinded_grader_page(page, scan, reading) -> None:
    """A blinded tier 2 grader gets the viewer's tools, and nothing that would bias the grade."""
    for tool in ("zoom-in", "zoom-out", "fit", "reset", "brightness", "contrast"):
        assert page.locator(f"[data-viewer-{tool}]").first.is_visible(), tool
    assert page.locator(".vf-blinded").is_visible()
    assert page.locator(".vf-reference, .vf-model, [data-viewer-overlay-control]").count() == 0
    assert page.locator("#grading-form").get_attribute("data-reference") == ""
    html = page.content()
    assert "heatmap.png" not in html and "/analysis/scans/" not in html
    assert scan.original_name not in html and "grader2a" not in html
    assert "Urgent referral" not in html and f"{reading.confidence * 100:.1f}%" not in html
    # Only the tier 1 decision is shown beside the form (blinding.grades_visible).
    tiers = page.locator(".vf-grades tbody tr td:first-child").all_inner_texts()
    assert tiers == ["1"]


def test_explore_filters_by_class_and_urgency_return_exactly_the_scans_read_so(live_url, browser_page, walk):
    page, base = browser_page, live_url
    page.set_default_timeout(60_000)
    readings = _current(Scan.objects.filter(case=walk["other"]))
    assert set(readings) == {s.pk for s in walk["submitted"]}
    browser.sign_in(page, base, "clinician")
    # This walk's examination only (its device), whatever rows other tests' servers left.
    page.goto(base + "/explore/?device=walk")
    assert _shown(page, "explore-scan") == set(readings)
    for field, values in (("predicted", Diagnosis.values), ("urgency", Urgency.values)):
        for value in values:
            page.select_option("#id_predicted", "")
            page.select_option("#id_urgency", "")
            page.select_option(f"#id_{field}", value)
            page.click("#explore-filters button[type=submit]")
            page.wait_for_load_state()
            expected = {pk for pk, p in readings.items() if getattr(p, field) == value}
            assert _shown(page, "explore-scan") == expected, (field, value)
    # Both at once: urgent CNV is the one CNV scan.
    page.select_option("#id_predicted", "CNV")
    page.select_option("#id_urgency", "urgent")
    page.click("#explore-filters button[type=submit]")
    page.wait_for_load_state()
    assert _shown(page, "explore-scan") == {pk for pk, p in readings.items() if p.predicted == "CNV"}
    check_fits(page, "09-explore-cnv-urgent")
