"""Helpers for browser tests: Playwright driving Debian's Chromium against live_server.

The fixtures ``browser_page`` and ``live_url`` live in ``tests/conftest.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
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
