"""Security headers, no-store on patient data, production settings and entry points."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import ScanFactory

REPO = Path(__file__).resolve().parents[2]


def csp_directives(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}


@pytest.mark.django_db
def test_every_page_has_a_csp_without_inline_scripts(client):
    directives = csp_directives(client.get("/"))
    assert directives["script-src"] == "script-src 'self'"
    assert "'unsafe-inline'" not in directives["style-src-elem"]
    assert directives["object-src"] == "object-src 'none'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"


@pytest.mark.django_db
def test_every_page_has_permissions_referrer_frame_and_nosniff_headers(client):
    response = client.get("/")
    assert "camera=()" in response["Permissions-Policy"] and "geolocation=()" in response["Permissions-Policy"]
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_public_pages_for_anonymous_visitors_may_be_cached(client):
    assert "no-store" not in client.get("/about/").get("Cache-Control", "")


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/patients/", "/patients/?q=KER-103044", "/account/"])
def test_every_page_for_a_signed_in_user_is_no_store(client, clinician, url):
    client.force_login(clinician)
    response = client.get(url)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_every_api_answer_is_no_store_even_an_error(api_client, clinician):
    assert "no-store" in api_client.get("/api/patients/")["Cache-Control"]
    api_client.force_authenticate(clinician)
    assert "no-store" in api_client.get("/api/patients/")["Cache-Control"]
    assert "no-store" in api_client.get("/api/patients/999999/")["Cache-Control"]


@pytest.mark.django_db
def test_a_downloaded_original_cannot_run_as_a_page(client, clinician):
    scan = ScanFactory()
    client.force_login(clinician)
    response = client.get(reverse("cases:scan_image", args=[scan.pk]) + "?original=1")
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Security-Policy"].startswith("sandbox")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]


def test_templates_have_no_inline_scripts_handlers_or_javascript_urls():
    offenders = []
    for path in (REPO / "templates").rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag:
                offenders.append(f"{path.name}: inline {tag}")
        if re.search(r"\son[a-z]+\s*=", text):
            offenders.append(f"{path.name}: inline event handler")
        if "javascript:" in text:
            offenders.append(f"{path.name}: javascript: URL")
        if re.search(r"<style\b", text):
            offenders.append(f"{path.name}: <style> element")
    assert offenders == []


def _run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OCT_SSL", "OCT_HSTS"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_production_settings_pass_the_deploy_check_without_warnings():
    result = _run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_SETTINGS_MODULE="octportal.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="oct.example.org",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_plain_http_trial_switches_off_the_redirect_and_the_check_says_so():
    result = _run_manage(
        "check", "--deploy",
        DJANGO_SETTINGS_MODULE="octportal.settings.production", OCT_SSL_REDIRECT="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="oct.example.org",
    )
    assert "security.W008" in result.stdout + result.stderr


def test_the_wsgi_entry_point_defaults_to_production_settings():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    code = "import octportal.wsgi"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set in production" in result.stderr


def test_manage_py_keeps_the_development_default_for_local_use():
    assert 'setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.base")' in (REPO / "manage.py").read_text()


def test_the_wsgi_entry_point_keeps_settings_it_is_given():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "octportal.settings.base"
    code = "import octportal.wsgi; from django.conf import settings; print(settings.SETTINGS_MODULE)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "octportal.settings.base"
