"""The grading page's keyboard flow in a real browser (Playwright + Debian's Chromium)."""
from __future__ import annotations


import pytest

from verification import services
from verification.models import Grade, Review
from tests import browser
from tests.browser import requires_chromium
from tests.factories import ScanFactory

pytestmark = [pytest.mark.e2e, requires_chromium]


def sign_in(page, base: str, user) -> None:
    browser.sign_in(page, base, user.username)


def test_grader_uses_keys_to_confirm_correct_and_move_on(live_url, browser_page, grader_t1, grader_t2, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = False  # "confirm or correct"
    base_url, page = live_url, browser_page
    first = ScanFactory(source_label="DRUSEN", source_label_origin="kermany")
    second = ScanFactory(source_label="NORMAL")
    third = ScanFactory()
    for s in (first, second, third):
        services.quality_submit(scan=s, grader=grader_t1, accept=True)
    sign_in(page, base_url, grader_t2)
    page.goto(base_url + "/verification/worklist/2/")
    page.click("#start-grading")
    page.wait_for_selector("#grading-form")
    assert f"/scans/{first.pk}/" in page.url
    page.wait_for_timeout(300)
    page.keyboard.press("Enter")  # confirm the current label (DRUSEN) and go on
    page.wait_for_url(f"**/scans/{second.pk}/tier/2/")
    page.keyboard.press("c")  # correct it to CNV
    assert page.is_checked("input[name=cnv]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/scans/{third.pk}/tier/2/")
    g1 = Grade.objects.get(scan=first, grader=grader_t2)
    g2 = Grade.objects.get(scan=second, grader=grader_t2)
    assert g1.label == "DRUSEN" and g1.reference_label == "DRUSEN" and g1.finding_drusen
    assert g1.time_taken_ms is not None and g1.time_taken_ms >= 300
    assert g2.label == "CNV" and g2.reference_label == "NORMAL" and g2.finding_cnv and not g2.finding_drusen
    assert Review.objects.get(scan=first).stage == Review.Stage.GRADING  # needs a second grader


def test_quality_grader_excludes_with_keys(live_url, browser_page, grader_t1):
    base_url, page = live_url, browser_page
    scan = ScanFactory()
    sign_in(page, base_url, grader_t1)
    page.goto(f"{base_url}/verification/scans/{scan.pk}/tier/1/")
    page.wait_for_selector("#grading-form")
    page.keyboard.press("x")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_url("**/verification/worklist/1/")
    review = Review.objects.get(scan=scan)
    assert review.stage == Review.Stage.EXCLUDED and review.exclusion_reason == "low_resolution"
