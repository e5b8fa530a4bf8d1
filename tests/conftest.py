"""Shared fixtures: one user per role, an API client, a browser page, the live server's URL;
the real worker's come from tests/integration/workers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from cases.roles import Role

REPO_ROOT = Path(__file__).resolve().parent.parent
# The real Celery worker fixtures (worker_factory, reading_worker, broker_url, ...).
pytest_plugins = ["tests.integration.workers"]


def oct_data_dir() -> Path:
    """The real OCT images: ``OCT_DATA_DIR`` or ``../shared/oct`` beside the repo."""
    return Path(os.environ.get("OCT_DATA_DIR", REPO_ROOT.parent / "shared" / "oct"))


@pytest.fixture
def oct_data() -> Path:
    path = oct_data_dir()
    if not (path / "MANIFEST.tsv").is_file():
        pytest.skip(f"real OCT images not found at {path} (set OCT_DATA_DIR to the folder holding MANIFEST.tsv)")
    return path


def make_user(username: str, *roles: str, **extra):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)
    for role in roles:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def user_factory(db):
    """Create a user with the given roles: ``user_factory("ann", Role.GRADER_T2)``."""
    return make_user


@pytest.fixture
def clinician(db):
    return make_user("clinician", Role.CLINICIAN)


@pytest.fixture
def grader_t1(db):
    return make_user("grader1", Role.GRADER_T1)


@pytest.fixture
def grader_t2(db):
    return make_user("grader2", Role.GRADER_T2)


@pytest.fixture
def grader_t2b(db):
    return make_user("grader2b", Role.GRADER_T2)


@pytest.fixture
def grader_t3(db):
    return make_user("grader3", Role.GRADER_T3)


@pytest.fixture
def admin(db):
    return make_user("boss", Role.ADMIN, is_staff=True, is_superuser=True)


@pytest.fixture
def no_role_user(db):
    return make_user("norole")


@pytest.fixture(autouse=True)
def _fresh_content_type_cache():
    """Live-server and transactional tests flush the database, which gives content
    types new ids; a cache left from an earlier test would point at the old ones."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
    yield


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty Django cache (throttle counters, the statistics
    snapshot), as a fresh process would."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _fresh_cache():
    """API throttle counters live in the cache and user ids repeat across tests."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def browser_page(monkeypatch):
    """A Playwright page in headless Debian Chromium (skips when either is missing)."""
    from tests.browser import CHROMIUM, LAUNCH_ARGS

    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the ORM calls a test makes
    # beside it are synchronous, but Django cannot tell.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page
        context.close()
        browser.close()


@pytest.fixture
def live_url(request, transactional_db) -> str:
    """The live server's URL, with the role groups back after live-server flushes.

    Django's live server wraps the app in a media handler built from MEDIA_URL, which
    is None on purpose (no public media route); an off-site placeholder makes that
    handler serve nothing, so images stay behind the authenticated view as in production.
    """
    from django.test.utils import override_settings

    for name in Role.values:
        Group.objects.get_or_create(name=name)
    with override_settings(MEDIA_URL="http://media.invalid/"):
        return request.getfixturevalue("live_server").url


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()
