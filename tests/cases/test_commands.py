"""Management commands: setup_roles and seed_demo are idempotent and safe."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command

from cases.management.commands.seed_demo import DEMO_PATIENT, DEMO_USERS, demo_password
from cases.models import Case, Patient
from cases.roles import Role


def perms(group: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=group).permissions.select_related("content_type")
    }


def test_setup_roles_assigns_model_permissions(db):
    call_command("setup_roles", verbosity=0)
    clinic = perms(Role.CLINICIAN)
    for model in ("patient", "case", "scan"):
        assert {f"cases.add_{model}", f"cases.change_{model}", f"cases.view_{model}"} <= clinic
        assert f"cases.delete_{model}" not in clinic
    for role in (Role.GRADER_T1, Role.GRADER_T2, Role.GRADER_T3):
        granted = perms(role)
        assert "cases.view_scan" in granted and "cases.view_patient" not in granted
        assert all(p.split(".")[1].startswith("view_") for p in granted)
    admin = perms(Role.ADMIN)
    for app in ("inference", "verification"):
        every = {f"{app}.{p.codename}" for p in Permission.objects.filter(content_type__app_label=app)}
        assert every <= admin
        viewable = {p for p in every if ".view_" in p}
        assert viewable <= clinic and viewable <= perms(Role.GRADER_T2)
    assert {"cases.delete_patient", "cases.delete_scan"} <= admin


def test_setup_roles_is_idempotent(db):
    call_command("setup_roles", verbosity=0)
    first = {g: perms(g) for g in Role.values}
    call_command("setup_roles", verbosity=0)
    assert {g: perms(g) for g in Role.values} == first
    assert Group.objects.filter(name__in=Role.values).count() == len(Role.values)


def test_seed_demo_refuses_without_debug(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        call_command("seed_demo")
    assert not get_user_model().objects.exists()


def test_seed_demo_creates_one_account_per_role_and_prints_them(db, settings, capsys):
    settings.DEBUG = True
    call_command("seed_demo")
    out = capsys.readouterr().out
    User = get_user_model()
    for username, role, superuser in DEMO_USERS:
        user = User.objects.get(username=username)
        assert user.check_password(demo_password(username))
        assert user.groups.filter(name=role).exists()
        assert user.is_superuser == superuser and user.is_staff == superuser
        assert f"| {username}" in out and demo_password(username) in out
    assert Case.objects.filter(patient__identifier=DEMO_PATIENT).count() == 1


def test_seed_demo_is_idempotent_and_restores_passwords(db, settings):
    call_command("seed_demo", "--force", stdout=None)
    user = get_user_model().objects.get(username="grader3")
    user.set_password("changed")
    user.save()
    call_command("seed_demo", "--force")
    user.refresh_from_db()
    assert user.check_password(demo_password("grader3"))
    assert get_user_model().objects.count() == len(DEMO_USERS)
    assert Patient.objects.filter(identifier=DEMO_PATIENT).count() == 1
