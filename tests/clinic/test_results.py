"""Issue 14: verified labels back to the clinic, the clinician's home with acknowledgements,
urgency and the latest reading on the patient list and page (SQL, bounded queries)."""
from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from cases.models import Acknowledgement
from cases.services import scan_acknowledge
from octportal.errors import DomainError
from tests.clinic.conftest import read_scan, verify
from tests.factories import CaseFactory, PatientFactory

pytestmark = pytest.mark.django_db


# --- verified labels ------------------------------------------------------------------------


def test_case_page_shows_final_label_verifier_and_disagreement(client, clinician, grader_t3):
    agreed = read_scan("CNV")
    differs = read_scan("DME", case=agreed.case)
    verify(agreed, "CNV", grader_t3)
    verify(differs, "NORMAL", grader_t3)
    client.force_login(clinician)
    html = client.get(agreed.case.get_absolute_url()).content.decode()
    assert html.count("data-verdict-differs") == 1
    assert "NORMAL" in html and "grader3" in html


def test_case_page_says_when_each_label_was_verified_to_the_minute(client, clinician, grader_t3):
    scan = read_scan("CNV")
    review = verify(scan, "CNV", grader_t3)
    client.force_login(clinician)
    html = client.get(scan.case.get_absolute_url()).content.decode()
    # As on the scan page and in the report: the time too, not only the day.
    assert f"grader3, <time datetime=\"{review.verified_at.isoformat()}\">{review.verified_at:%Y-%m-%d %H:%M}</time>" in html


def test_scan_page_marks_a_verified_label_that_differs_from_the_model(client, clinician, grader_t3):
    scan = read_scan("DME")
    verify(scan, "NORMAL", grader_t3)
    client.force_login(clinician)
    html = client.get(scan.get_absolute_url()).content.decode()
    assert "Final label: <strong class=\"vf-final\">Normal</strong>" in html
    assert "verified by grader3" in html and "data-verdict-differs" in html


def test_scan_page_has_no_marker_when_they_agree(client, clinician, grader_t3):
    scan = read_scan("DME")
    verify(scan, "DME", grader_t3)
    client.force_login(clinician)
    assert "data-verdict-differs" not in client.get(scan.get_absolute_url()).content.decode()


# --- the clinician's home and acknowledgements -----------------------------------------------


@pytest.mark.parametrize("who,expected", [(None, 302), ("no_role_user", 403), ("grader_t2", 403), ("clinician", 200)])
def test_clinic_home_permissions(client, request, who, expected):
    if who:
        client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("cases:clinic_home")).status_code == expected


def test_clinic_home_lists_urgent_unacknowledged_results_newest_first(client, clinician, version):
    older = read_scan("CNV", version=version)
    newer = read_scan("DME", version=version)
    routine = read_scan("DRUSEN", version=version)
    seen = read_scan("CNV", version=version)
    scan_acknowledge(scan=seen, user=clinician, action="seen")
    client.force_login(clinician)
    html = client.get(reverse("cases:clinic_home")).content.decode()
    assert f'data-urgent-scan="{newer.pk}"' in html and f'data-urgent-scan="{older.pk}"' in html
    assert html.index(f'data-urgent-scan="{newer.pk}"') < html.index(f'data-urgent-scan="{older.pk}"')
    assert f'data-urgent-scan="{routine.pk}"' not in html and f'data-urgent-scan="{seen.pk}"' not in html
    assert "Recently acknowledged" in html


def test_acknowledging_takes_the_result_off_the_list_and_is_audited(client, clinician):
    scan = read_scan("CNV")
    client.force_login(clinician)
    home = reverse("cases:clinic_home")
    response = client.post(
        reverse("cases:scan_acknowledge", args=[scan.pk]),
        {"action": "referred", "referred_to": "Retina clinic", "next": home},
    )
    assert response.status_code == 302 and response["Location"] == home
    ack = Acknowledgement.objects.get(scan=scan)
    assert ack.acknowledged_by == clinician and ack.summary == "Referred to Retina clinic"
    assert LogEntry.objects.get_for_object(ack).filter(action=LogEntry.Action.CREATE, actor=clinician).exists()
    assert f'data-urgent-scan="{scan.pk}"' not in client.get(home).content.decode()
    assert "Referred to Retina clinic" in client.get(scan.get_absolute_url()).content.decode()


def test_a_referral_must_name_whom(clinician):
    scan = read_scan("CNV")
    with pytest.raises(DomainError):
        scan_acknowledge(scan=scan, user=clinician, action="referred", referred_to="  ")
    assert not Acknowledgement.objects.exists()


def test_acknowledge_is_post_only_for_clinic_staff(client, grader_t1):
    scan = read_scan("CNV")
    client.force_login(grader_t1)
    assert client.post(reverse("cases:scan_acknowledge", args=[scan.pk]), {"action": "seen"}).status_code == 403
    assert client.get(reverse("cases:scan_acknowledge", args=[scan.pk])).status_code in (403, 405)


def test_acknowledge_ignores_an_offsite_next(client, clinician):
    scan = read_scan("CNV")
    client.force_login(clinician)
    response = client.post(
        reverse("cases:scan_acknowledge", args=[scan.pk]), {"action": "seen", "next": "https://evil.example/"}
    )
    assert response["Location"] == scan.get_absolute_url()


def test_clinic_home_queries_are_bounded(client, clinician, version, django_assert_max_num_queries):
    for _ in range(6):
        read_scan("CNV", version=version)
    client.force_login(clinician)
    with django_assert_max_num_queries(10):
        assert client.get(reverse("cases:clinic_home")).status_code == 200


# --- urgency and latest reading on the patient list and page ---------------------------------


def test_patient_list_shows_worst_urgency_and_latest_reading(client, clinician, version):
    urgent = read_scan("DRUSEN", version=version)
    read_scan("CNV", version=version, case=CaseFactory(patient=urgent.case.patient))
    calm = read_scan("NORMAL", version=version)
    PatientFactory(identifier="P-NOSCANS")
    client.force_login(clinician)
    page = client.get(reverse("cases:patient_list")).context["page"]
    rows = {p.identifier: p for p in page.object_list}
    assert rows[urgent.case.patient.identifier].worst_urgency == "urgent"
    assert rows[urgent.case.patient.identifier].latest_predicted == "CNV"
    assert rows[calm.case.patient.identifier].worst_urgency == "observation"
    assert rows["P-NOSCANS"].worst_urgency is None


def test_gate_rejected_readings_do_not_count_as_findings(client, clinician):
    scan = read_scan("CNV", gate_passed=False)
    client.force_login(clinician)
    rows = {p.pk: p for p in client.get(reverse("cases:patient_list")).context["page"].object_list}
    assert rows[scan.case.patient_id].worst_urgency is None and rows[scan.case.patient_id].latest_predicted is None


def test_patient_list_query_count_does_not_grow_with_patients(client, clinician, version, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(clinician)
    read_scan("CNV", version=version)
    client.get(reverse("cases:patient_list"))  # warm the session
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("cases:patient_list"))
    for label in ("DME", "DRUSEN", "NORMAL", "CNV", "DME"):
        read_scan(label, version=version)
    with CaptureQueriesContext(connection) as many:
        html = client.get(reverse("cases:patient_list")).content.decode()
    assert len(many) == len(few) <= 8
    assert html.count('class="badge urgent"') == 4  # CNV, DME, CNV, DME


def test_patient_page_shows_each_examinations_urgency(client, clinician, version, django_assert_max_num_queries):
    scan = read_scan("DME", version=version)
    read_scan("NORMAL", version=version, case=CaseFactory(patient=scan.case.patient))
    client.force_login(clinician)
    with django_assert_max_num_queries(8):
        html = client.get(scan.case.patient.get_absolute_url()).content.decode()
    assert 'class="badge urgent"' in html and 'class="badge observation"' in html
