"""Browser-test set-up."""
from __future__ import annotations

import pytest
from django.conf import settings


@pytest.fixture(scope="session", autouse=True)
def _live_server_serves_no_media():
    """Django's live server wraps the app in a media-files handler built from MEDIA_URL.

    OCT Portal has no public media URL (MEDIA_URL = None), which that handler cannot
    parse. An absolute URL on another host makes it serve nothing, so scan images stay
    reachable only through the authenticated image view, as in production.
    """
    previous = settings.MEDIA_URL
    settings.MEDIA_URL = "http://media.invalid/"
    yield
    settings.MEDIA_URL = previous


@pytest.fixture(autouse=True)
def _role_groups(transactional_db):
    """live_server's transactional tests flush the tables, including the groups the
    ``cases.0002_roles`` migration created; put them back."""
    from django.contrib.auth.models import Group

    from cases.roles import Role

    for name in Role.values:
        Group.objects.get_or_create(name=name)
