"""The audit trail's text names records by type and id, and records free text as changed only."""
from __future__ import annotations

import json

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cases import services
from tests.cases.conftest import upload
from tests.factories import bscan_bytes

PHI = "SMITH_JOHN MRN12345 1952-03-04"


def entry_text(entry: LogEntry) -> str:
    return " ".join([entry.object_repr, entry.changes_text or "", json.dumps(entry.changes_dict),
                     json.dumps(entry.additional_data or {})])


@pytest.mark.django_db
def test_patient_entries_carry_no_identifier_in_their_name_and_no_notes(clinician):
    patient = services.patient_create(identifier="KER-103044", sex="F", birth_year=1952, created_by=clinician,
                                      notes=PHI)
    services.patient_update(patient=patient, data={"notes": PHI + " again"})
    entries = list(LogEntry.objects.get_for_object(patient))
    assert len(entries) == 2
    for entry in entries:
        assert entry.object_repr == f"patient #{patient.pk}"
        assert "SMITH" not in entry_text(entry) and "MRN12345" not in entry_text(entry)
    assert entries[-1].changes_dict["notes"][1] == "[redacted]"
    # Structured fields stay auditable.
    assert entries[-1].changes_dict["birth_year"][1] == "1952"


@pytest.mark.django_db
def test_scan_entries_carry_no_file_name(client, clinician, case):
    scan = services.scan_register(case=case, file=upload(f"{PHI}.png", bscan_bytes()), uploaded_by=clinician)
    client.force_login(clinician)
    client.get(reverse("cases:scan_image", args=[scan.pk]))
    entries = list(LogEntry.objects.get_for_object(scan))
    assert {e.action for e in entries} >= {LogEntry.Action.CREATE, LogEntry.Action.ACCESS}
    for entry in entries:
        assert entry.object_repr == f"scan #{scan.pk}"
        assert "SMITH" not in entry_text(entry)


@pytest.mark.django_db
def test_a_scan_s_create_entry_holds_its_own_fields_not_the_relations_to_it(case, clinician):
    """Not "predictions: inference.Prediction.None", and no look-up of its (absent) review."""
    with CaptureQueriesContext(connection) as queries:
        scan = services.scan_register(case=case, file=upload("a.png", bscan_bytes()), uploaded_by=clinician)
    assert not [q for q in queries.captured_queries if "verification_review" in q["sql"]]
    changes = LogEntry.objects.get_for_object(scan).get(action=LogEntry.Action.CREATE).changes_dict
    assert {"case", "sha256", "width", "status"} <= set(changes)
    assert not {"predictions", "grades", "acknowledgements", "review"} & set(changes)
