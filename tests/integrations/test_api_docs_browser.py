"""Swagger UI and ReDoc render in a real browser under the CSP, from this server's static files."""
from __future__ import annotations

import pytest

from cases.roles import Role
from tests import browser
from tests.browser import requires_chromium

pytestmark = [pytest.mark.e2e, requires_chromium]


def test_the_api_viewers_and_the_token_page_render_without_csp_violations(live_url, browser_page, user_factory):
    user_factory("clinician", Role.CLINICIAN)
    page, base = browser_page, live_url
    violations: list[str] = []
    outside: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    # Requests that completed (a request the CSP blocks is reported as failed, not finished).
    page.on("requestfinished", lambda req: outside.append(req.url) if not req.url.startswith(base) else None)
    browser.sign_in(page, base, "clinician")

    page.goto(base + "/api/v1/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "OCT Portal API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("text=/api/v1/patients/")

    page.goto(base + "/api/v1/redoc/")
    page.wait_for_selector("h1:has-text('OCT Portal API')")

    page.goto(base + "/account/tokens/")
    page.fill("input[name=name]", "browser script")
    page.click("button:has-text('Create token')")
    assert page.inner_text("#new-token").startswith("oct_")
    page.wait_for_load_state("networkidle")
    # ReDoc's bundle asks for its footer logo from cdn.redoc.ly; the CSP blocks it, so no request leaves the site.
    violations = [v for v in violations if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in v]
    assert violations == [] and [u for u in outside if not u.startswith(("data:", "blob:"))] == []
