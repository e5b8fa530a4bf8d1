"""Issue 14 (remaining parts): the same eye's examinations over time, side by side, with each
visit's reading; the clinician's home flags a patient's eye whose latest reading changed."""
from __future__ import annotations

import datetime

import pytest
from django.urls import reverse

from inference import selectors
from tests.clinic.conftest import read_scan
from tests.factories import CaseFactory, PatientFactory

pytestmark = pytest.mark.django_db


def visit(patient, eye: str, day: int, *labels: str):
    case = CaseFactory(patient=patient, eye=eye, exam_date=datetime.date(2026, 1, day))
    for label in labels:
        read_scan(label, case=case)
    return case


@pytest.fixture
def history():
    patient = PatientFactory(identifier="FU-0001")
    first = visit(patient, "OD", 1, "DRUSEN")
    second = visit(patient, "OD", 8, "NORMAL", "DRUSEN")
    empty = visit(patient, "OD", 12)
    third = visit(patient, "OD", 15, "DRUSEN", "CNV")
    other_eye = visit(patient, "OS", 15, "NORMAL")
    return patient, [first, second, empty, third], other_eye


def test_followup_page_lists_the_eyes_visits_oldest_first_with_readings(client, clinician, history):
    patient, visits, other_eye = history
    client.force_login(clinician)
    html = client.get(reverse("cases:eye_followup", args=[patient.pk, "OD"])).content.decode()
    positions = [html.index(f'data-visit="{c.pk}"') for c in visits]
    assert positions == sorted(positions)
    assert f'data-visit="{other_eye.pk}"' not in html
    assert html.count("data-visit-changed") == 1  # DRUSEN, DRUSEN, (none), CNV
    assert "No reading yet." in html


def test_visit_reading_is_the_most_urgent_scan(clinician, history):
    patient, visits, _ = history
    _, rows = selectors.eye_followup(user=clinician, patient_id=patient.pk, eye="OD")
    assert [v.predicted for v in rows] == ["DRUSEN", "DRUSEN", None, "CNV"]
    assert [v.changed for v in rows] == [False, False, False, True]
    assert rows[3].previous_predicted == "DRUSEN"


def test_followup_page_is_bounded_and_for_clinic_staff(client, clinician, grader_t3, history, django_assert_max_num_queries):
    patient, _, _ = history
    url = reverse("cases:eye_followup", args=[patient.pk, "OD"])
    client.force_login(grader_t3)
    assert client.get(url).status_code == 403
    client.force_login(clinician)
    with django_assert_max_num_queries(8):
        assert client.get(url).status_code == 200
    assert client.get(reverse("cases:eye_followup", args=[patient.pk, "XX"])).status_code == 404


def test_home_flags_a_changed_reading_since_the_last_visit(client, clinician, history):
    patient, visits, _ = history
    steady = PatientFactory(identifier="FU-0002")
    visit(steady, "OS", 1, "CNV")
    visit(steady, "OS", 9, "CNV")
    client.force_login(clinician)
    html = client.get(reverse("cases:clinic_home")).content.decode()
    assert html.count("data-changed-since-last-visit") == 1
    assert "DRUSEN → CNV" in html
    assert reverse("cases:eye_followup", args=[patient.pk, "OD"]) in html


def test_changed_since_last_visit_is_two_queries_the_role_and_the_visits(clinician, history, django_assert_num_queries):
    patient, _, _ = history
    with django_assert_num_queries(2):
        changed = selectors.changed_since_last_visit(user=clinician, pairs=[(patient.pk, "OD"), (patient.pk, "OS")])
    assert changed == {(patient.pk, "OD"): ("DRUSEN", "CNV")}
