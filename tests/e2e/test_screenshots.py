"""README screenshots, issue 14: the explore page, the B-scan viewer (heatmap on, a verified
example side by side) and the first page of an examination report, taken with Chromium
(the report's PDF rendered by poppler's pdftoppm).

Every run writes them under var/artefacts/screenshots/ (git-ignored); ``scripts/screenshots``
sets ``OCT_SCREENSHOTS_DIR=docs/screenshots`` to refresh the ones the README shows.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import browser
from tests.browser import requires_chromium
from tests.e2e import clinic_data

pytestmark = [pytest.mark.e2e, requires_chromium]

REPO = Path(__file__).resolve().parents[2]


def out_dir() -> Path:
    path = Path(os.environ.get("OCT_SCREENSHOTS_DIR") or REPO / "var" / "artefacts" / "screenshots")
    if not path.is_absolute():
        path = REPO / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_readme_screenshots(live_url, browser_page, tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    clinic = clinic_data.build()
    page, base, out = browser_page, live_url, out_dir()
    page.set_viewport_size({"width": 1366, "height": 900})
    browser.sign_in(page, base, "clinician")

    page.goto(base + "/explore/")
    page.wait_for_function("() => [...document.querySelectorAll('.explore-thumb')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(out / "explore.png"))

    page.goto(base + clinic.scans["urgent"].get_absolute_url())
    page.wait_for_function("() => document.querySelector('[data-viewer-image]').naturalWidth > 0")
    page.locator("[data-viewer-overlay-toggle]").check()
    page.wait_for_function("() => document.querySelector('[data-viewer-overlay-image]').naturalWidth > 0")
    page.click("[data-viewer-refs] summary")
    page.locator(f'[data-compare-src$="/scans/{clinic.scans["verified-CNV"].pk}/image/"]').click()
    page.wait_for_function("() => document.querySelector('[data-viewer-compare-image]').naturalWidth > 0")
    page.locator(".scan-layout").screenshot(path=str(out / "viewer.png"))
    assert (out / "explore.png").stat().st_size > 10_000 and (out / "viewer.png").stat().st_size > 10_000

    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        pytest.skip("pdftoppm (apt-get install poppler-utils) renders the report's first page; the others were written")
    response = page.request.get(base + f"/cases/{clinic.cases['second'].pk}/report.pdf")
    assert response.ok and response.body()[:5] == b"%PDF-"
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(response.body())
    subprocess.run([pdftoppm, "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(out / "report")],
                   check=True, timeout=120)
    assert (out / "report.png").stat().st_size > 10_000
