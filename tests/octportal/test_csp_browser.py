"""The Content-Security-Policy breaks no page: a real browser reports no violation."""
from __future__ import annotations

import pytest

from tests import browser
from tests.browser import requires_chromium
from tests.factories import ScanFactory, bscan_bytes

pytestmark = [pytest.mark.e2e, requires_chromium]


def test_pages_with_scripts_viewer_and_charts_raise_no_csp_violation(live_url, browser_page, user_factory, tmp_path,
                                                                      settings):
    from cases.models import Scan
    from cases.roles import Role
    from tests.inference.support import make_prediction

    settings.MEDIA_ROOT = str(tmp_path / "media")
    user_factory("clinician", Role.CLINICIAN, Role.GRADER_T1, Role.ADMIN, is_staff=True, is_superuser=True)
    scan = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(scan, heatmap=bscan_bytes("PNG", 160, 128))
    pending = ScanFactory(case=scan.case, status=Scan.Status.QUEUED)

    page, base = browser_page, live_url
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)

    browser.sign_in(page, base, "clinician")
    for path in [
        "/", "/patients/", f"/patients/{scan.case.patient.pk}/", f"/cases/{scan.case.pk}/",
        f"/scans/{scan.pk}/", f"/scans/{pending.pk}/", "/verification/statistics/", "/account/",
        f"/verification/scans/{scan.pk}/audit/", "/verification/worklist/1/", f"/verification/scans/{scan.pk}/tier/1/",
        "/admin/", "/admin/cases/patient/",
        f"/admin/cases/patient/{scan.case.patient.pk}/change/", "/admin/auditlog/logentry/",
    ]:
        response = page.goto(base + path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    assert violations == []
    # The viewer drew the scan (its script ran and its image loaded under the policy).
    page.goto(base + f"/scans/{scan.pk}/")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("[...document.images].every(i => i.complete)")
    assert violations == []
