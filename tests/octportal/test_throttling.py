"""API rate limits per user, per token and per scope."""
from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from cases.roles import Role


@pytest.fixture
def rates(monkeypatch):
    def set_rates(**rates):
        base = {"anon": "1000/min", "user": "1000/min", "token": "1000/min", "upload": "1000/min"}
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**base, **rates})
    return set_rates


@pytest.mark.django_db
def test_a_user_over_the_rate_gets_429_json(rates, clinician):
    rates(user="3/min")
    api = APIClient()
    api.force_authenticate(clinician)
    assert [api.get("/api/patients/").status_code for _ in range(3)] == [200, 200, 200]
    response = api.get("/api/patients/")
    assert response.status_code == 429
    assert "throttled" in response.json()["detail"].lower()
    assert "Retry-After" in response


@pytest.mark.django_db
def test_each_token_has_its_own_budget(rates, clinician, user_factory):
    rates(token="2/min")
    other = user_factory("clinician2", Role.CLINICIAN)
    mine, theirs = APIClient(), APIClient()
    mine.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=clinician).key}")
    theirs.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other).key}")
    assert [mine.get("/api/patients/").status_code for _ in range(3)] == [200, 200, 429]
    assert theirs.get("/api/patients/").status_code == 200


@pytest.mark.django_db
def test_uploads_have_their_own_scoped_rate(rates, clinician):
    rates(upload="1/min")
    api = APIClient()
    api.force_authenticate(clinician)
    assert api.post("/api/cases/999/scans/", {}, format="multipart").status_code == 404
    assert api.post("/api/cases/999/scans/", {}, format="multipart").status_code == 429
    assert api.get("/api/patients/").status_code == 200


def test_default_rates_are_configured():
    from django.conf import settings

    assert set(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]) == {"anon", "user", "token", "upload"}
