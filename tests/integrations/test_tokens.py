"""API tokens: hash only, shown once, scoped, expiring, revocable, audited, throttled per token."""
from __future__ import annotations

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.contrib.admin.sites import site
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from integrations import services
from integrations.admin import ApiTokenAdmin
from integrations.models import ApiToken
from integrations.tokens import secret_hash

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_the_account_page_shows_the_secret_once_and_stores_only_its_hash(client, clinician):
    client.force_login(clinician)
    response = client.post("/account/tokens/", {"name": "upload script", "scope": "write", "days": 30})
    assert response.status_code == 201
    secret = response.context["secret"]
    assert secret.startswith("oct_") and secret in response.content.decode()
    token = ApiToken.objects.get(user=clinician)
    assert token.key_hash == secret_hash(secret) and secret not in str(list(ApiToken.objects.values()))
    assert secret not in client.get("/account/tokens/").content.decode()
    assert "upload script" in client.get("/account/tokens/").content.decode()
    assert "/account/tokens/" in client.get("/account/").content.decode()


def test_a_token_authenticates_and_each_use_is_audited(clinician):
    token, secret = services.token_create(user=clinician, name="reader", scope="read", days=10)
    response = bearer(secret).get("/api/v1/patients/", REMOTE_ADDR="127.0.0.9")
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    entry = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, object_pk=str(token.pk)).get()
    assert entry.actor == clinician and entry.additional_data == {"method": "GET", "path": "/api/v1/patients/"}
    assert entry.remote_addr == "127.0.0.9"


def test_a_read_only_token_is_refused_on_writes(clinician):
    _, read = services.token_create(user=clinician, name="r", scope="read", days=10)
    _, write = services.token_create(user=clinician, name="w", scope="write", days=10)
    body = {"identifier": "TOK-1"}
    response = bearer(read).post("/api/v1/patients/", body, format="json")
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert bearer(write).post("/api/v1/patients/", body, format="json").status_code == 201


@pytest.mark.parametrize("state, words", [("expired", "expired on"), ("revoked", "revoked"), ("unknown", "Invalid")])
def test_expired_revoked_and_unknown_tokens_are_a_401_that_says_why(clinician, state, words):
    token, secret = services.token_create(user=clinician, name="t", scope="read", days=10)
    if state == "expired":
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif state == "revoked":
        services.token_revoke(token_id=token.pk, by=clinician)
    else:
        secret = "oct_not-a-token"
    response = bearer(secret).get("/api/v1/patients/")
    assert response.status_code == 401
    assert words in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_users_revoke_their_own_tokens_only(client, clinician, grader_t1):
    mine, _ = services.token_create(user=clinician, name="mine", scope="read", days=10)
    theirs, _ = services.token_create(user=grader_t1, name="theirs", scope="read", days=10)
    client.force_login(clinician)
    assert client.post(f"/account/tokens/{mine.pk}/revoke/").status_code == 302
    assert client.post(f"/account/tokens/{theirs.pk}/revoke/").status_code == 404
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.is_revoked and mine.revoked_by == clinician and not theirs.is_revoked


def test_admins_revoke_in_the_django_admin(admin, clinician):
    token, _ = services.token_create(user=clinician, name="t", scope="read", days=10)
    request = RequestFactory().post("/admin/")
    request.user = admin
    model_admin = ApiTokenAdmin(ApiToken, site)
    model_admin.message_user = lambda *a, **k: None
    model_admin.revoke(request, ApiToken.objects.all())
    token.refresh_from_db()
    assert token.revoked_by == admin
    assert not model_admin.has_add_permission(request)


def test_sign_out_everywhere_revokes_every_token(client, clinician):
    token, _ = services.token_create(user=clinician, name="t", scope="read", days=10)
    client.force_login(clinician)
    client.post("/account/sign-out-everywhere/")
    token.refresh_from_db()
    assert token.is_revoked


def test_tokens_are_throttled_one_by_one(monkeypatch, clinician):
    rates = {"anon": "1000/min", "user": "1000/min", "token": "2/min", "upload": "1000/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    _, first = services.token_create(user=clinician, name="a", scope="read", days=10)
    _, second = services.token_create(user=clinician, name="b", scope="read", days=10)
    assert [bearer(first).get("/api/v1/patients/").status_code for _ in range(3)] == [200, 200, 429]
    assert bearer(second).get("/api/v1/patients/").status_code == 200


def test_a_token_lasts_at_most_the_configured_days(clinician, settings):
    with pytest.raises(services.DomainError):
        services.token_create(user=clinician, name="t", scope="read", days=settings.OCT_API_TOKEN_MAX_DAYS + 1)
