"""Pending readings appear without a reload, and the heatmap toggles on the viewer
(real Chromium through Playwright against Django's live server)."""
from __future__ import annotations


import pytest
from django.utils import timezone

from cases.models import Scan
from tests import browser
from tests.browser import requires_chromium
from tests.factories import CaseFactory, ScanFactory
from tests.inference.support import make_prediction, make_version, png_bytes

pytestmark = [pytest.mark.e2e, requires_chromium]


def sign_in(page, base: str, user) -> None:
    browser.sign_in(page, base, user.username)


def finish(scan: Scan, label: str) -> None:
    """What a worker does: store the reading and mark the scan analysed."""
    make_prediction(scan, predicted=label, confidence=0.77, heatmap=png_bytes(scan.width, scan.height, "RGB"))
    Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.ANALYSED, status_changed_at=timezone.now())


def test_scan_page_shows_the_result_when_it_arrives_and_toggles_the_heatmap(live_url, browser_page, user_factory):
    base, page = live_url, browser_page
    from cases.roles import Role

    user = user_factory("clinic1", Role.CLINICIAN)
    make_version()
    scan = ScanFactory(status=Scan.Status.QUEUED, width=512, height=496)
    sign_in(page, base, user)
    page.goto(f"{base}/scans/{scan.pk}/")
    page.wait_for_selector("text=appears here when it is ready")

    finish(scan, "CNV")
    page.wait_for_selector(".prob-row", timeout=15_000)  # no reload: the poller swapped the partial
    assert page.locator(".analysis .badge.urgent").inner_text() == "Urgent referral"
    assert page.url.endswith(f"/scans/{scan.pk}/")

    page.click("[data-heatmap-toggle]")
    overlay = page.locator("[data-viewer] .viewer-overlay")
    overlay.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('[data-viewer] .viewer-overlay').naturalWidth > 0")
    assert page.locator("[data-heatmap-toggle]").get_attribute("aria-pressed") == "true"
    page.click("[data-heatmap-toggle]")
    overlay.wait_for(state="hidden")


def test_case_page_rows_and_summary_update_without_reload(live_url, browser_page, user_factory):
    base, page = live_url, browser_page
    from cases.roles import Role

    user = user_factory("clinic2", Role.CLINICIAN)
    make_version()
    case = CaseFactory()
    scans = [ScanFactory(case=case, status=Scan.Status.QUEUED) for _ in range(2)]
    sign_in(page, base, user)
    page.goto(f"{base}/cases/{case.pk}/")
    page.wait_for_selector("text=2 pending")

    finish(scans[0], "NORMAL")
    finish(scans[1], "DME")
    page.wait_for_selector(".analysis-summary >> text=Most urgent finding", timeout=15_000)
    assert "Diabetic macular edema" in page.locator(".analysis-summary").inner_text()
    page.wait_for_function("() => document.querySelectorAll('.analysis-row .badge').length === 2")
