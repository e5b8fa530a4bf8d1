"""End to end, issue 14: a clinician finds an urgent result from the start page, opens it and
acknowledges it; explore filters by class and urgency; the pages fit phones, tablets and
desktops (screenshots at 390, 768 and 1366 px under var/artefacts/, no horizontal overflow).
"""
from __future__ import annotations

import pytest

from tests import browser
from tests.browser import requires_chromium

pytestmark = [pytest.mark.e2e, requires_chromium]

ARTEFACTS = browser.ARTEFACTS / "clinic-day"


def check_fits(page, name: str) -> None:
    browser.check_fits(page, ARTEFACTS, name)


def test_clinician_acknowledges_an_urgent_result_and_explores(live_url, browser_page, user_factory, tmp_path, settings):
    from cases.models import Acknowledgement, Scan
    from cases.roles import Role
    from tests.factories import CaseFactory, PatientFactory, ScanFactory
    from tests.inference.support import make_prediction, make_version, png_bytes

    settings.MEDIA_ROOT = str(tmp_path / "media")
    clinician = user_factory("clinician", Role.CLINICIAN)
    version = make_version()
    patient = PatientFactory(identifier="E2E-URGENT-0001")
    case = CaseFactory(patient=patient, device="Heidelberg Spectralis", referring_clinician="Dr Long-Name-Referrer")
    urgent = ScanFactory(case=case, status=Scan.Status.ANALYSED, original_name="macula-with-a-rather-long-file-name-001.png")
    make_prediction(urgent, version, "CNV", confidence=0.93, heatmap=png_bytes(64, 48, "RGB"))
    routine = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(routine, version, "DRUSEN", confidence=0.71)
    for label in ("DME", "NORMAL"):
        s = ScanFactory(status=Scan.Status.ANALYSED)
        make_prediction(s, version, label, confidence=0.88)
    page, base = browser_page, live_url

    browser.sign_in(page, base, "clinician")
    page.wait_for_url(base + "/home/")
    item = page.locator(f'[data-urgent-scan="{urgent.pk}"]')
    assert "E2E-URGENT-0001" in item.inner_text() and "Urgent referral" in item.inner_text()
    check_fits(page, "01-home")

    page.goto(base + "/patients/")
    check_fits(page, "02-patients")
    page.goto(base + case.get_absolute_url())
    check_fits(page, "03-case")

    page.goto(base + "/home/")
    page.click(f'[data-urgent-scan="{urgent.pk}"] .result-title a')
    page.wait_for_url(f"**/scans/{urgent.pk}/")
    assert "Not acknowledged yet." in page.locator("#acknowledgements").inner_text()
    check_fits(page, "04-scan")
    page.check('#acknowledgements input[value="referred"]')
    page.fill(f"#ack-to-{urgent.pk}", "Retina clinic")
    page.click("#acknowledgements button[type=submit]")
    page.wait_for_url(f"**/scans/{urgent.pk}/")
    assert "Referred to Retina clinic" in page.locator("#acknowledgements").inner_text()
    ack = Acknowledgement.objects.get(scan=urgent)
    assert ack.acknowledged_by_id == clinician.pk

    page.click("nav >> text=Results")
    page.wait_for_url(base + "/home/")
    assert page.locator(f'[data-urgent-scan="{urgent.pk}"]').count() == 0

    page.click("nav >> text=Explore")
    page.wait_for_url(base + "/explore/")
    assert page.locator("[data-explore-scan]").count() == 4
    check_fits(page, "05-explore")
    page.select_option("#id_predicted", "CNV")
    page.click("#explore-filters button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("[data-explore-scan]").count() == 1
    assert page.locator(f'[data-explore-scan="{urgent.pk}"]').count() == 1
    page.select_option("#id_predicted", "")
    page.select_option("#id_urgency", "urgent")
    page.click("#explore-filters button[type=submit]")
    page.wait_for_load_state()
    shown = {int(x) for x in page.locator("[data-explore-scan]").evaluate_all("els => els.map(e => e.dataset.exploreScan)")}
    assert urgent.pk in shown and routine.pk not in shown and len(shown) == 2
    # Polled from here: wait_for_function would eval() in the page, which the CSP forbids.
    loaded = "() => [...document.querySelectorAll('.explore-thumb')].every(i => i.complete && i.naturalWidth > 0)"
    for _ in range(100):
        if page.evaluate(loaded):
            break
        page.wait_for_timeout(100)
    assert page.evaluate(loaded), "explore thumbnails did not load"
    check_fits(page, "06-explore-urgent")
