"""The per-eye reading rule of a volume, and the selector that feeds it."""
from __future__ import annotations

import pytest
from django.urls import reverse

from cases.models import Scan, Volume
from inference.selectors import volume_reading
from inference.volume_reading import SliceReading, eye_reading
from tests.factories import CaseFactory, ScanFactory
from tests.inference.support import make_prediction


def _slice(i: int, cnv=0.0, dme=0.0, drusen=0.0) -> SliceReading:
    return SliceReading(slice_index=i, probabilities={"CNV": cnv, "DME": dme, "DRUSEN": drusen,
                                                      "NORMAL": max(0.0, 1 - cnv - dme - drusen)})


def test_one_urgent_slice_among_normal_ones_does_not_make_the_eye_urgent():
    slices = [_slice(i) for i in range(10)] + [_slice(10, cnv=0.9)]
    reading = eye_reading(slices, min_slices=2, min_p=0.5)
    assert reading.diagnosis == "NORMAL" and not reading.urgent and reading.urgent_slices == 1
    assert 10 in reading.key_slices  # the most suspicious slice is still shown first to the reader


def test_consistent_urgent_slices_make_the_eye_urgent_with_the_stronger_class():
    slices = [_slice(0), _slice(1, cnv=0.3, dme=0.6), _slice(2, dme=0.8), _slice(3, cnv=0.55)]
    reading = eye_reading(slices, min_slices=2, min_p=0.5)
    assert reading.urgent and reading.diagnosis == "DME" and reading.urgent_slices == 3
    assert reading.key_slices == [1, 2, 3]
    few = eye_reading([_slice(0), _slice(1, cnv=0.9), _slice(2, cnv=0.8)], min_slices=2, min_p=0.5)
    assert few.key_slices == [1, 2]  # a normal-looking slice is not a key slice of a finding


def test_drusen_needs_consistent_evidence_too():
    assert eye_reading([_slice(0, drusen=0.9), _slice(1), _slice(2)], min_slices=2, min_p=0.5).diagnosis == "NORMAL"
    assert eye_reading([_slice(0, drusen=0.9), _slice(1, drusen=0.7)], min_slices=2, min_p=0.5).diagnosis == "DRUSEN"


def test_a_volume_of_one_is_read_like_its_slice():
    assert eye_reading([_slice(0, cnv=0.9)], min_slices=3, min_p=0.5).diagnosis == "CNV"
    assert eye_reading([], min_slices=2, min_p=0.5) is None


@pytest.mark.django_db
def test_selector_reads_only_analysed_visible_slices(settings):
    settings.OCT_EYE_URGENT_MIN_SLICES, settings.OCT_EYE_URGENT_MIN_P = 2, 0.5
    case = CaseFactory()
    volume = Volume.objects.create(case=case, source_format="zip", laterality="OD", slice_count=3, sha256="c" * 64,
                                   original_name="v.zip")
    scans = [ScanFactory(case=case, volume=volume, slice_index=i, status=Scan.Status.ANALYSED) for i in range(3)]
    Scan.objects.filter(pk=scans[2].pk).update(status=Scan.Status.QUEUED)
    for scan in scans:
        make_prediction(scan, predicted="CNV", confidence=0.9)
    analysis = volume_reading(volume=volume)
    assert analysis.reading.urgent and analysis.reading.slices_read == 2 and analysis.pending == 1
    assert [s["p_urgent"] is not None for s in analysis.slices] == [True, True, False]
    hidden = volume_reading(volume=volume, visible_ids={scans[0].pk})
    assert hidden.reading.slices_read == 1 and hidden.reading.urgent  # a volume of one read slice


@pytest.mark.django_db
def test_the_selector_reads_a_volume_in_a_fixed_number_of_queries(django_assert_num_queries):
    case = CaseFactory()
    volume = Volume.objects.create(case=case, source_format="zip", laterality="OD", slice_count=6, sha256="e" * 64,
                                   original_name="v.zip")
    for i in range(6):
        make_prediction(ScanFactory(case=case, volume=volume, slice_index=i, status=Scan.Status.ANALYSED),
                        predicted="CNV", confidence=0.9)
    with django_assert_num_queries(2):  # the slices, their current readings: not one per slice
        assert volume_reading(volume=volume).reading.slices_read == 6


@pytest.mark.django_db
def test_slices_carry_their_place_across_the_volume_and_the_most_suspicious_one():
    case = CaseFactory()
    volume = Volume.objects.create(case=case, source_format="dicom", laterality="OD", slice_count=4, sha256="d" * 64,
                                   original_name="v.dcm")
    positions = [0.0, 0.1, 0.3, 0.4]  # uneven: the file's positions, not the index, place a slice
    scans = [ScanFactory(case=case, volume=volume, slice_index=i, slice_position_mm=mm, status=Scan.Status.ANALYSED)
             for i, mm in enumerate(positions)]
    for scan, label in zip(scans, ("NORMAL", "DME", "CNV", "NORMAL"), strict=True):
        make_prediction(scan, predicted=label, confidence=0.9 if label == "CNV" else 0.8)
    analysis = volume_reading(volume=volume)
    assert [s["position"] for s in analysis.slices] == [0.0, 0.25, 0.75, 1.0]
    assert analysis.most_suspicious == 2
    # Hidden readings are never the most suspicious; without positions the index places a slice.
    assert volume_reading(volume=volume, visible_ids={scans[1].pk}).most_suspicious == 1
    assert volume_reading(volume=volume, visible_ids=set()).most_suspicious is None
    Scan.objects.filter(pk=scans[3].pk).update(slice_position_mm=None)
    assert [s["position"] for s in volume_reading(volume=volume).slices] == [0.0, 0.3333, 0.6667, 1.0]


@pytest.mark.django_db
def test_volume_reading_api_permission_matrix_and_body(api_client, clinician, grader_t1, no_role_user):
    case = CaseFactory()
    volume = Volume.objects.create(case=case, source_format="zip", laterality="OD", slice_count=2, sha256="d" * 64,
                                   original_name="v.zip")
    for i in range(2):
        make_prediction(ScanFactory(case=case, volume=volume, slice_index=i, status=Scan.Status.ANALYSED),
                        predicted="DME", confidence=0.9)
    url = reverse("inference-api:volume_reading", args=[volume.pk])
    assert api_client.get(url).status_code in (401, 403)
    api_client.force_authenticate(no_role_user)
    assert api_client.get(url).status_code == 403
    api_client.force_authenticate(clinician)
    body = api_client.get(url).json()
    assert body["reading"]["diagnosis"] == "DME" and body["reading"]["urgency"] == "urgent"
    assert [s["slice_index"] for s in body["slices"]] == [0, 1]
    api_client.force_authenticate(grader_t1)
    assert api_client.get(url).status_code == 200
