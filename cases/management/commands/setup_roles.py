"""Give each role group the model permissions it needs in the Django admin (idempotent).

Permissions of the ``inference`` and ``verification`` apps are looked up at run
time, so whatever models those apps define are covered.
"""
from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Q

from cases.roles import GRADER_ROLES, Role

RECORD_MODELS = ("patient", "case", "scan")
OTHER_APPS = ("inference", "verification")


def _perms(q: Q) -> set[Permission]:
    return set(Permission.objects.filter(q).select_related("content_type"))


def role_permissions() -> dict[str, set[Permission]]:
    """The full permission set of every role group."""
    records = Q(content_type__app_label="cases", content_type__model__in=RECORD_MODELS)
    other_apps = Q(content_type__app_label__in=OTHER_APPS)
    clinic = _perms(records & Q(codename__regex=r"^(add|change|view)_")) | _perms(other_apps & Q(codename__startswith="view_"))
    grader = _perms(Q(content_type__app_label="cases", codename="view_scan")) | _perms(
        other_apps & Q(codename__startswith="view_")
    )
    admin = _perms(Q(content_type__app_label="cases") | other_apps)
    mapping = {Role.CLINICIAN.value: clinic, Role.ADMIN.value: admin}
    for role in GRADER_ROLES:
        mapping[role.value] = grader
    return mapping


class Command(BaseCommand):
    help = "Create the role groups if missing and set their model permissions (safe to run repeatedly)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        for name, perms in role_permissions().items():
            group, created = Group.objects.get_or_create(name=name)
            group.permissions.set(perms)
            self.stdout.write(f"{'created' if created else 'updated'} group {name}: {len(perms)} permissions")
        self.stdout.write(self.style.SUCCESS("Roles are set up."))
