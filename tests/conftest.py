"""Shared fixtures: one user per role, and an API client."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from cases.roles import Role

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()
