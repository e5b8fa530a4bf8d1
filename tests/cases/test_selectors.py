"""Selectors: access by role, 404 for unknown ids, and a bounded number of queries."""
from __future__ import annotations

import pytest

from cases import selectors
from octportal.errors import Forbidden, NotFound
from tests.factories import CaseFactory, PatientFactory, ScanFactory

GRADERS = ["grader_t1", "grader_t2", "grader_t3"]


def test_clinician_lists_patients_with_search(clinician):
    PatientFactory(identifier="ABC-1")
    PatientFactory(identifier="XYZ-2")
    assert [p.identifier for p in selectors.patient_list(user=clinician, query="abc")] == ["ABC-1"]
    assert selectors.patient_list(user=clinician, query="").count() == 2


def test_patients_counted_annotates_counts_of_the_rows_given(clinician):
    case = CaseFactory()
    CaseFactory(patient=case.patient)
    (patient,) = selectors.patients_counted(selectors.patient_list(user=clinician, query=case.patient.identifier))
    assert patient.case_count == 2 and patient.last_exam == case.exam_date


@pytest.mark.parametrize("role", GRADERS + ["no_role_user"])
def test_graders_and_others_cannot_read_records(role, request, db):
    user = request.getfixturevalue(role)
    scan = ScanFactory()
    for call in (
        lambda: selectors.patient_list(user=user, query=""),
        lambda: selectors.patient_get(user=user, patient_id=scan.case.patient_id),
        lambda: selectors.case_get(user=user, case_id=scan.case_id),
        lambda: selectors.case_list(user=user),
        lambda: selectors.scan_list(user=user),
        lambda: selectors.scan_get(user=user, scan_id=scan.pk),
    ):
        with pytest.raises(Forbidden):
            call()


@pytest.mark.parametrize("role", GRADERS + ["clinician", "admin"])
def test_graders_clinicians_and_admins_may_fetch_scan_images(role, request, db):
    scan = ScanFactory()
    assert selectors.scan_image_get(user=request.getfixturevalue(role), scan_id=scan.pk) == scan


def test_users_without_role_may_not_fetch_images(no_role_user):
    with pytest.raises(Forbidden):
        selectors.scan_image_get(user=no_role_user, scan_id=ScanFactory().pk)


def test_refused_user_learns_nothing_about_ids(grader_t1):
    with pytest.raises(Forbidden):
        selectors.patient_get(user=grader_t1, patient_id=999_999)


def test_unknown_ids_are_not_found(clinician):
    with pytest.raises(NotFound):
        selectors.patient_get(user=clinician, patient_id=999_999)
    with pytest.raises(NotFound):
        selectors.case_get(user=clinician, case_id=999_999)
    with pytest.raises(NotFound):
        selectors.scan_get(user=clinician, scan_id=999_999)
    with pytest.raises(NotFound):
        selectors.scan_image_get(user=clinician, scan_id=999_999)


def test_case_get_loads_scans_without_n_plus_one(clinician, django_assert_max_num_queries):
    case = CaseFactory()
    for _ in range(5):
        ScanFactory(case=case, uploaded_by=clinician)
    clinician = type(clinician).objects.get(pk=clinician.pk)
    with django_assert_max_num_queries(4):  # roles, case+patient, scans+uploader
        loaded = selectors.case_get(user=clinician, case_id=case.pk)
        names = [(s.uploaded_by.username, s.case.patient.identifier) for s in loaded.scans.all()]
    assert len(names) == 5


def test_patient_get_loads_cases_with_scan_counts(clinician, django_assert_max_num_queries):
    patient = PatientFactory()
    for _ in range(4):
        ScanFactory(case=CaseFactory(patient=patient))
    clinician = type(clinician).objects.get(pk=clinician.pk)
    with django_assert_max_num_queries(3):
        loaded = selectors.patient_get(user=clinician, patient_id=patient.pk)
        counts = [c.scan_count for c in loaded.cases.all()]
    assert counts == [1, 1, 1, 1]


def test_scan_list_filters_by_case_and_status(clinician, django_assert_max_num_queries):
    scan = ScanFactory()
    ScanFactory()
    clinician = type(clinician).objects.get(pk=clinician.pk)
    with django_assert_max_num_queries(2):
        rows = list(selectors.scan_list(user=clinician, case_id=scan.case_id))
        [r.case.patient.identifier for r in rows]
    assert rows == [scan]
    assert list(selectors.scan_list(user=clinician, status="analysed")) == []
