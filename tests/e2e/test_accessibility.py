"""Accessibility, issue 14: axe-core (vendored by the PyPI package axe-playwright-python,
injected from disk, nothing fetched at run time) on every page type, for each role that
sees it; no serious or critical violation is allowed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import browser
from tests.browser import requires_chromium
from tests.e2e import clinic_data

pytestmark = [pytest.mark.e2e, requires_chromium]

ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "artefacts" / "axe"
BLOCKING = {"serious", "critical"}


def axe_script() -> str:
    axe = pytest.importorskip("axe_playwright_python.base", reason="pip install axe-playwright-python (requirements-dev.txt)")
    return axe.AXE_SCRIPT


def check(page, name: str, script: str) -> list[str]:
    """Run axe on the page as it is now; return the serious and critical violations."""
    page.wait_for_load_state("load")
    page.evaluate(script)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / f"{name}.json").write_text(json.dumps(result["violations"], indent=1))
    return [
        f"{name}: {v['id']} ({v['impact']}) {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.fixture
def clinic(live_url, tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VERIFICATION_READING_CENTRE_MODE = True
    return clinic_data.build()


def test_every_page_type_has_no_serious_or_critical_axe_violation(live_url, browser_page, clinic):
    script = axe_script()
    page, base = browser_page, live_url
    s = clinic.scans
    pages: dict[str | None, list[tuple[str, str]]] = {
        None: [
            ("public-home", "/"),
            ("about", "/about/"),
            ("learn-anonymous", "/learn/cnv/"),
            ("login", "/accounts/login/"),
            ("not-found", "/no-such-page/"),
        ],
        "clinician": [
            ("clinic-home", "/home/"),
            ("patients", "/patients/"),
            ("patient", clinic.patient.get_absolute_url()),
            ("patient-new", "/patients/new/"),
            ("patient-edit", f"/patients/{clinic.patient.pk}/edit/"),
            ("case-new", f"/patients/{clinic.patient.pk}/cases/new/"),
            ("case-with-volume", clinic.cases["second"].get_absolute_url()),
            ("case-edit", f"/cases/{clinic.cases['second'].pk}/edit/"),
            ("scan", s["urgent"].get_absolute_url()),
            ("followup", f"/patients/{clinic.patient.pk}/eyes/OD/"),
            ("explore", "/explore/"),
            ("learn-signed-in", "/learn/cnv/"),
            ("account", "/account/"),
            ("forbidden", "/verification/statistics/"),
        ],
        "grader1": [
            ("worklist-1", "/verification/worklist/1/"),
            ("grade-1", f"/verification/scans/{s['tier1'].pk}/tier/1/"),
        ],
        "grader2a": [
            ("worklist-2", "/verification/worklist/2/"),
            ("grade-2-blinded", f"/verification/scans/{s['tier2'].pk}/tier/2/"),
            ("explore-tier2", "/explore/"),
        ],
        "grader3": [
            ("worklist-3", "/verification/worklist/3/"),
            ("grade-3", f"/verification/scans/{s['tier3'].pk}/tier/3/"),
            ("grade-3-verified", f"/verification/scans/{s['verified-CNV'].pk}/tier/3/"),
            ("statistics", "/verification/statistics/"),
        ],
        "boss": [
            ("audit", f"/verification/scans/{s['urgent'].pk}/audit/"),
        ],
    }
    problems: list[str] = []
    checked = 0
    for user, urls in pages.items():
        page.context.clear_cookies()
        if user:
            browser.sign_in(page, base, user)
        for name, url in urls:
            page.goto(base + url)
            problems += check(page, name, script)
            checked += 1
    # The viewer's opened states: the comparison and the shortcuts.
    page.context.clear_cookies()
    browser.sign_in(page, base, "clinician")
    page.goto(base + s["urgent"].get_absolute_url())
    page.click("[data-viewer-refs] summary")
    page.locator("[data-compare-src]").first.click()
    page.click("[data-viewer-help] summary")
    page.locator("[data-viewer-overlay-toggle]").check()
    problems += check(page, "scan-viewer-open", script)
    assert checked >= 25
    assert not problems, "\n".join(problems)
