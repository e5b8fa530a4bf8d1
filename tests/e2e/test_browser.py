"""End to end in a real browser (Playwright driving Debian's Chromium) against live_server:
sign in, register a patient and an examination, upload images (file input and drag and
drop), open the scan page and use the viewer.

Set OCT_SCREENSHOT_DIR to keep screenshots of every page visited.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import browser
from tests.browser import requires_chromium
from tests.factories import bscan_bytes

pytestmark = [pytest.mark.e2e, requires_chromium]


def shoot(page, name: str) -> None:
    folder = os.environ.get("OCT_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/accounts/login/")
    shoot(page, "01-login")
    browser.sign_in(page, base, username, password)


def test_clinician_registers_uploads_and_views_a_scan(live_url, browser_page, user_factory, tmp_path, settings):
    from auditlog.models import LogEntry

    from cases.models import Scan
    from cases.roles import Role

    settings.MEDIA_ROOT = str(tmp_path / "media")
    user_factory("clinician", Role.CLINICIAN)
    page, base = browser_page, live_url

    page.goto(base + "/")
    assert page.locator("h1").inner_text() == "Retinal OCT Analysis Platform"
    shoot(page, "00-home")
    page.goto(base + "/learn/cnv/")
    assert "Decision support, not a diagnosis" in page.content()
    shoot(page, "02-learn-cnv")
    page.goto(base + "/about/")
    shoot(page, "03-about")

    sign_in(page, base, "clinician", "pw-clinician")
    assert page.locator(".user-box").inner_text().startswith("clinician")
    page.click("nav >> text=Patients")
    page.click("text=New patient")
    page.fill("#id_identifier", "E2E-0001")
    page.select_option("#id_sex", "F")
    page.fill("#id_birth_year", "1951")
    shoot(page, "04-patient-form")
    page.click("main button[type=submit]")
    page.wait_for_url("**/patients/*/")
    assert "E2E-0001" in page.locator("h1").inner_text()

    page.click("text=New examination")
    page.select_option("#id_eye", "OS")
    page.fill("#id_exam_date", "2026-11-02")
    page.fill("#id_device", "Heidelberg Spectralis")
    page.click("main button[type=submit]")
    page.wait_for_url("**/cases/*/")
    shoot(page, "05-case-empty")

    good = tmp_path / "bscan-001.png"
    good.write_bytes(bscan_bytes("PNG", 512, 496, seed=11))
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not an image")
    page.set_input_files("#id_files", [str(good), str(bad)])
    assert "bscan-001.png" in page.locator("[data-file-list]").inner_text()
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report")
    report = page.locator("#upload-report").inner_text()
    assert "1 accepted, 1 rejected." in report
    assert "notes.jpg: The file is a text file, not an image." in report
    shoot(page, "06-case-report")

    # Drag and drop: a dropped file lands in the same plain file input.
    page.evaluate(
        """() => {
            const zone = document.querySelector('[data-dropzone]');
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array([1, 2, 3])], 'dropped.png', {type: 'image/png'}));
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }"""
    )
    assert page.evaluate("document.querySelector('#id_files').files.length") == 1
    assert "dropped.png" in page.locator("[data-file-list]").inner_text()

    scan = Scan.objects.get()
    assert scan.status in Scan.Status.values
    page.click("#upload-report a")
    page.wait_for_url(f"**/scans/{scan.pk}/")
    page.wait_for_function("document.querySelector('[data-viewer-image]').naturalWidth > 0")
    page.wait_for_function("document.querySelector('[data-viewer]').dataset.zoom !== undefined")
    shoot(page, "07-scan")

    viewer = page.locator("[data-viewer]")
    fit = float(viewer.get_attribute("data-zoom"))
    page.click("[data-viewer-zoom-in]")
    assert float(viewer.get_attribute("data-zoom")) == pytest.approx(fit * 1.25, rel=1e-3)
    page.focus("[data-viewer-stage]")
    page.keyboard.press("+")
    assert float(viewer.get_attribute("data-zoom")) == pytest.approx(fit * 1.25 * 1.25, rel=1e-3)
    before = page.locator("[data-viewer-image]").evaluate("img => img.style.transform")
    page.keyboard.press("ArrowLeft")
    assert page.locator("[data-viewer-image]").evaluate("img => img.style.transform") != before
    # Drag to pan.
    box = page.locator("[data-viewer-stage]").bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 230)
    page.mouse.up()
    page.locator("[data-viewer-brightness]").fill("150")
    page.locator("[data-viewer-contrast]").fill("180")
    style = page.locator("[data-viewer-image]").evaluate("img => img.style.filter")
    assert "brightness(150%)" in style and "contrast(180%)" in style
    shoot(page, "08-scan-adjusted")
    page.click("[data-viewer-reset]")
    assert float(viewer.get_attribute("data-zoom")) == pytest.approx(fit, rel=1e-3)
    assert "brightness(100%)" in page.locator("[data-viewer-image]").evaluate("img => img.style.filter")

    # An overlay (the heatmap another app provides) can be attached and toggled.
    page.evaluate(
        "url => OCTViewer.setOverlay(document.querySelector('[data-viewer]'), url, 'Show heatmap')",
        f"/scans/{scan.pk}/image/",
    )
    toggle = page.locator("[data-viewer-overlay-toggle]")
    assert toggle.is_visible()
    toggle.check()
    assert page.locator(".viewer-overlay").is_visible()
    toggle.uncheck()
    assert not page.locator(".viewer-overlay").is_visible()

    assert LogEntry.objects.get_for_object(scan).filter(action=LogEntry.Action.ACCESS).exists()

    page.click(".user-box button[type=submit]")
    page.wait_for_url(base + "/")
    assert "Sign in" in page.locator(".user-box").inner_text()


def test_grader_is_refused_patient_pages_in_the_browser(live_url, browser_page, user_factory):
    from cases.roles import Role

    user_factory("grader1", Role.GRADER_T1)
    page, base = browser_page, live_url
    sign_in(page, base, "grader1", "pw-grader1")
    response = page.goto(base + "/patients/")
    assert response.status == 403
    assert page.locator("h1").inner_text() == "Not allowed"
    shoot(page, "09-forbidden")
