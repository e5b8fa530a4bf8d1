"""Two graders racing for the last tier 2 slot: the Review row lock lets only one in."""
from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, connections

from cases.diagnoses import Diagnosis
from cases.roles import Role
from verification import services
from verification.models import Grade, Review
from octportal.errors import Conflict
from tests.factories import ScanFactory


def _grader(name: str, role: str):
    user = get_user_model().objects.create_user(username=name, password="x")
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.mark.django_db(transaction=True)
def test_two_graders_racing_for_the_last_slot_cannot_both_take_it(settings):
    if connection.vendor != "postgresql":
        pytest.skip("row locking (SELECT ... FOR UPDATE) needs PostgreSQL; SQLite serialises writers instead")
    settings.VERIFICATION_REQUIRED_GRADES = 2
    scan = ScanFactory()
    services.quality_submit(scan=scan, grader=_grader("qc", Role.GRADER_T1), accept=True)
    services.grade_submit(scan=scan, grader=_grader("first", Role.GRADER_T2), label=Diagnosis.CNV, confidence=3)
    racers = [_grader("racer-a", Role.GRADER_T2), _grader("racer-b", Role.GRADER_T2)]
    barrier = threading.Barrier(len(racers))
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(user) -> None:
        try:
            barrier.wait(timeout=10)
            services.grade_submit(scan=scan, grader=user, label=Diagnosis.DME, confidence=3)
            result = "won"
        except Conflict:
            result = "conflict"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=race, args=(u,)) for u in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["conflict", "won"]
    assert Grade.objects.current().filter(scan=scan, tier=2).count() == 2
    assert Review.objects.get(scan=scan).stage == Review.Stage.ARBITRATION
