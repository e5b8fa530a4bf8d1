"""Helpers for browser tests: Playwright driving Debian's Chromium against live_server.

The fixtures ``browser_page`` and ``live_url`` live in ``tests/conftest.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots and other outputs of browser tests (git-ignored).
ARTEFACTS = Path(__file__).resolve().parents[1] / "var" / "artefacts"
WIDTHS = (390, 768, 1366)
# Without the background-networking flags Chromium keeps dialling out, and this
# machine's closed network refuses each attempt.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"
)


def sign_in(page, base: str, username: str, password: str | None = None) -> None:
    """Sign in through the login form (test users have the password ``pw-<username>``)."""
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password or "pw-" + username)
    page.click("main button[type=submit]")
    page.wait_for_load_state()


def check_fits(page, folder: Path, name: str) -> None:
    """Screenshot the page at each width under ``folder`` and fail if it scrolls sideways."""
    folder.mkdir(parents=True, exist_ok=True)
    overflow = {}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(50)
        page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if scroll > inner:
            overflow[width] = (scroll, inner)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert not overflow, f"{name} scrolls sideways at {overflow}"
