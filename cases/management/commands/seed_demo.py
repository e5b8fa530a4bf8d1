"""Create one demo account per role (and a demo patient) and print the credentials.

Idempotent: existing demo accounts get their roles and known password back. Refuses
to run with DEBUG off unless ``--force``: demo passwords must never reach production.
"""
from __future__ import annotations

from datetime import date

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from cases import services
from cases.models import Case, Patient
from cases.roles import Role

DEMO_USERS: list[tuple[str, str, bool]] = [
    # username, role, superuser
    ("clinician", Role.CLINICIAN, False),
    ("grader1", Role.GRADER_T1, False),
    ("grader2a", Role.GRADER_T2, False),
    ("grader2b", Role.GRADER_T2, False),
    ("grader3", Role.GRADER_T3, False),
    ("admin", Role.ADMIN, True),
]
DEMO_PATIENT = "DEMO-0001"


def demo_password(username: str) -> str:
    return f"demo-{username}-oct"


class Command(BaseCommand):
    help = "Create demo accounts for every role and a demo patient; print the credentials."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="run even with DEBUG=False")
        parser.add_argument("--no-patient", action="store_true", help="do not create the demo patient")

    @transaction.atomic
    def handle(self, *args, force: bool = False, no_patient: bool = False, **options) -> None:
        if not settings.DEBUG and not force:
            raise CommandError("DEBUG is off: refusing to create demo accounts with known passwords (use --force).")
        User = get_user_model()
        rows = []
        for username, role, superuser in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            user.is_staff = superuser
            user.is_superuser = superuser
            user.is_active = True
            # The demo passwords meet the same policy as everyone's (AUTH_PASSWORD_VALIDATORS).
            validate_password(demo_password(username), user)
            user.set_password(demo_password(username))
            user.save()
            user.groups.add(Group.objects.get_or_create(name=role)[0])
            rows.append((username, demo_password(username), Role(role).label, "created" if created else "reset"))

        if not no_patient and not Patient.objects.filter(identifier=DEMO_PATIENT).exists():
            clinician = User.objects.get(username="clinician")
            patient = services.patient_create(
                identifier=DEMO_PATIENT, sex=Patient.Sex.FEMALE, birth_year=1952, created_by=clinician,
                notes="Demo record: not a real patient.",
            )
            services.case_create(
                patient=patient, eye=Case.Eye.OD, exam_date=date.today(), device="Heidelberg Spectralis",
                referring_clinician="Dr Demo", created_by=clinician,
            )
            self.stdout.write(f"created demo patient {DEMO_PATIENT} with one examination")

        widths = [max(len(str(r[i])) for r in rows + [("Username", "Password", "Role", "")]) for i in range(3)]
        line = "+".join("-" * (w + 2) for w in widths)
        self.stdout.write("Demo accounts (for local use only):")
        self.stdout.write(f"+{line}+")
        for cells in [("Username", "Password", "Role")] + [r[:3] for r in rows]:
            self.stdout.write("| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |")
            if cells[0] == "Username":
                self.stdout.write(f"+{line}+")
        self.stdout.write(f"+{line}+")
