"""Pending readings appear without a reload, and the heatmap toggles on the viewer
(real Chromium through Playwright against Django's live server)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.utils import timezone

from cases.models import Scan
from tests.factories import CaseFactory, ScanFactory
from tests.inference.support import make_prediction, make_version, png_bytes

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at /usr/bin/chromium"),
]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        yield pg
        context.close()
        browser.close()


@pytest.fixture
def base(request, transactional_db) -> str:
    """The live server's URL, with the role groups restored after live-server flushes.

    Django's live server builds a media handler from MEDIA_URL, which is None on purpose
    (no public media route): start it with an off-site placeholder that serves nothing."""
    from django.contrib.auth.models import Group
    from django.test.utils import override_settings

    from cases.roles import Role

    for role in Role.values:
        Group.objects.get_or_create(name=role)
    with override_settings(MEDIA_URL="http://media.invalid/"):
        return request.getfixturevalue("live_server").url


def sign_in(page, base: str, user) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw-" + user.username)
    page.click("main button[type=submit]")
    page.wait_for_load_state()


def finish(scan: Scan, label: str) -> None:
    """What a worker does: store the reading and mark the scan analysed."""
    make_prediction(scan, predicted=label, confidence=0.77, heatmap=png_bytes(scan.width, scan.height, "RGB"))
    Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.ANALYSED, status_changed_at=timezone.now())


def test_scan_page_shows_the_result_when_it_arrives_and_toggles_the_heatmap(base, page, user_factory):
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


def test_case_page_rows_and_summary_update_without_reload(base, page, user_factory):
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
