"""The grading page's keyboard flow in a real browser (Playwright + Debian's Chromium)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cases.verification import services
from cases.verification.models import Grade, Review
from tests.factories import ScanFactory

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at /usr/bin/chromium"),
]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _role_groups(transactional_db):
    """Live-server tests flush the database between tests, role groups included."""
    from django.contrib.auth.models import Group

    from cases.roles import Role

    for role in Role:
        Group.objects.get_or_create(name=role.value)


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        yield pg
        context.close()
        browser.close()


@pytest.fixture
def base_url(request) -> str:
    """live_server's URL. Django's live server needs MEDIA_URL to be a string, and ours is
    None on purpose (no public media route), so start it with a placeholder."""
    from django.test.utils import override_settings

    with override_settings(MEDIA_URL="/live-server-media-unused/"):
        return request.getfixturevalue("live_server").url


def sign_in(page, base: str, user) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw-" + user.username)
    page.click("main button[type=submit]")
    page.wait_for_load_state()


def test_grader_uses_keys_to_confirm_correct_and_move_on(base_url, page, grader_t1, grader_t2):
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


def test_quality_grader_excludes_with_keys(base_url, page, grader_t1):
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
