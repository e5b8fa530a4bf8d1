"""Sign-in lockout, password policy, session age and sign out everywhere."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from cases.management.commands.seed_demo import DEMO_USERS, demo_password

LOGIN = "/accounts/login/"


def sign_in(client: Client, username: str, password: str, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def fail(client: Client, username: str, times: int, **extra) -> None:
    for _ in range(times):
        response = sign_in(client, username, "wrong-password-123", **extra)
        assert response.status_code in (200, 429)


@pytest.mark.django_db
def test_five_failed_sign_ins_lock_the_account_even_with_the_right_password(client, clinician):
    fail(client, "clinician", 4)
    assert sign_in(client, "clinician", "wrong-password-123").status_code == 429  # the fifth
    response = sign_in(client, "clinician", "pw-clinician")
    assert response.status_code == 429
    body = response.content.decode()
    assert "Too many failed sign-in attempts" in body and "15 minutes" in body
    assert response["Retry-After"] == str(15 * 60)
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_four_failures_then_the_right_password_signs_in_and_resets_the_count(client, clinician):
    fail(client, "clinician", 4)
    assert sign_in(client, "clinician", "pw-clinician").status_code == 302
    client.logout()
    fail(client, "clinician", 4)
    assert sign_in(client, "clinician", "pw-clinician").status_code == 302


@pytest.mark.django_db
def test_a_locked_account_stays_locked_from_another_address(clinician):
    fail(Client(REMOTE_ADDR="203.0.113.7"), "clinician", 5, REMOTE_ADDR="203.0.113.7")
    other = Client()
    assert sign_in(other, "clinician", "pw-clinician", REMOTE_ADDR="198.51.100.9").status_code == 429


@pytest.mark.django_db
def test_an_address_guessing_many_accounts_is_locked_for_every_account(client, clinician, grader_t1):
    for name in ("alice", "bob", "carol", "dave", "erin"):
        sign_in(client, name, "wrong-password-123")
    assert sign_in(client, "grader1", "pw-grader1").status_code == 429
    # The same account from another address is not locked: the address was.
    assert sign_in(Client(), "grader1", "pw-grader1", REMOTE_ADDR="198.51.100.9").status_code == 302


@pytest.mark.django_db
def test_a_forged_forwarded_for_header_does_not_escape_the_address_lockout(client, clinician):
    for i, name in enumerate(("alice", "bob", "carol", "dave", "erin")):
        sign_in(client, name, "wrong-password-123", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
    assert sign_in(client, "clinician", "pw-clinician", HTTP_X_FORWARDED_FOR="10.9.9.99").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


@pytest.mark.django_db
def test_the_lockout_ends_after_the_cool_off(client, clinician):
    fail(client, "clinician", 5)
    assert sign_in(client, "clinician", "pw-clinician").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(client, "clinician", "pw-clinician").status_code == 302


@pytest.mark.django_db
def test_the_lockout_answers_json_to_scripts(client, clinician):
    fail(client, "clinician", 5)
    response = sign_in(client, "clinician", "pw-clinician", HTTP_ACCEPT="application/json")
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert "Too many failed sign-in attempts" in response.json()["detail"]


def test_lockout_settings_are_clinic_sensible():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


# --- password policy --------------------------------------------------------------------


@pytest.mark.parametrize("password", ["short-pw-1", "123456789012345", "password1234", "clinician-oct"])
@pytest.mark.django_db
def test_weak_passwords_are_refused(password):
    user = get_user_model()(username="clinician")
    with pytest.raises(ValidationError):
        validate_password(password, user)


@pytest.mark.django_db
def test_a_long_uncommon_password_is_accepted():
    validate_password("retina-lamp-quiet-harbour", get_user_model()(username="clinician"))


@pytest.mark.django_db
def test_every_demo_password_satisfies_the_policy_and_the_readme_lists_them():
    call_command("seed_demo", "--no-patient", "--force", stdout=StringIO())
    readme = (settings.BASE_DIR / "README.md").read_text()
    for username, _role, _superuser in DEMO_USERS:
        user = get_user_model().objects.get(username=username)
        validate_password(demo_password(username), user)
        assert user.check_password(demo_password(username))
        assert f"`{demo_password(username)}`" in readme


# --- session age --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_session_lasts_a_clinic_day_by_default(client, clinician):
    assert settings.SESSION_COOKIE_AGE == 8 * 3600
    assert sign_in(client, "clinician", "pw-clinician").status_code == 302
    left = client.session.get_expiry_date() - timezone.now()
    assert timedelta(hours=7, minutes=59) < left <= timedelta(hours=8)


# --- sign out everywhere ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_account_page_needs_a_signed_in_user(client):
    response = client.get(reverse("account:account"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_the_account_page_offers_sign_out_everywhere(client, grader_t2):
    client.force_login(grader_t2)
    response = client.get(reverse("account:account"))
    assert response.status_code == 200
    assert reverse("account:sign_out_everywhere") in response.content.decode()


@pytest.mark.django_db
def test_sign_out_everywhere_ends_every_session_and_the_token_of_that_user_only(clinician, grader_t1):
    laptop, workstation, colleague = Client(), Client(), Client()
    laptop.force_login(clinician)
    workstation.force_login(clinician)
    colleague.force_login(grader_t1)
    Token.objects.create(user=clinician)
    assert workstation.get(reverse("account:account")).status_code == 200

    response = laptop.post(reverse("account:sign_out_everywhere"))

    assert response.status_code == 302 and response["Location"] == reverse("login")
    for c in (laptop, workstation):
        assert c.get(reverse("account:account")).status_code == 302
    assert not Token.objects.filter(user=clinician).exists()
    assert colleague.get(reverse("account:account")).status_code == 200
    assert Session.objects.count() == 1


@pytest.mark.django_db
def test_sign_out_everywhere_refuses_get(client, clinician):
    client.force_login(clinician)
    assert client.get(reverse("account:sign_out_everywhere")).status_code == 405
    assert client.get(reverse("account:account")).status_code == 200
