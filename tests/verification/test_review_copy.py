"""Each scan carries a copy of where its review unit stands (``Scan.review_stage``, and
``Scan.review_label`` once verified), written by the grading services after every change,
so that explore filters and counts stages on the scan row alone (1M scans: docs/deployment.md).
A B-scan of a volume unit carries its volume's review."""
from __future__ import annotations

from importlib import import_module

import pytest
from django.apps import apps

from cases.models import Scan
from tests.factories import ScanFactory, VolumeFactory
from verification import services
from verification.models import Review

pytestmark = pytest.mark.django_db

FINDINGS = {"cnv": True, "macular_edema": False, "drusen": False, "other": False}


@pytest.fixture(autouse=True)
def two_graders(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.VERIFICATION_REQUIRED_GRADES = 2


def copies(*scans) -> list[tuple[str, str]]:
    return [tuple(Scan.objects.values_list("review_stage", "review_label").get(pk=s.pk)) for s in scans]


def unit_state(scan) -> tuple[str, str]:
    in_volume = scan.volume_id and scan.volume.slice_count > 1
    review = Review.objects.get(volume=scan.volume) if in_volume else Review.objects.get(scan=scan)
    return review.stage, review.final_label if review.stage == Review.Stage.VERIFIED else ""


def test_a_scan_copies_each_stage_of_its_review(grader_t1, grader_t2, grader_t2b, grader_t3):
    scan = ScanFactory()
    assert copies(scan) == [("quality_control", "")]
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    assert copies(scan) == [("grading", "")]
    services.grade_submit(scan=scan, grader=grader_t2, label="CNV", findings=FINDINGS, confidence=4)
    assert copies(scan) == [("grading", "")]
    services.grade_submit(scan=scan, grader=grader_t2b, label="DME", findings=FINDINGS, confidence=4)
    assert copies(scan) == [("arbitration", "")]
    services.verify_submit(scan=scan, grader=grader_t3, final_label="DME")
    assert copies(scan) == [("verified", "DME")]
    assert copies(scan) == [unit_state(scan)]


def test_a_corrected_final_label_is_copied(grader_t1, grader_t2, grader_t2b, grader_t3):
    scan = ScanFactory()
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    for g in (grader_t2, grader_t2b):
        services.grade_submit(scan=scan, grader=g, label="CNV", findings=FINDINGS, confidence=4)
    assert copies(scan) == [("verification", "")]
    grade = services.verify_submit(scan=scan, grader=grader_t3, final_label="CNV")
    services.grade_correct(grade=grade, grader=grader_t3, label="DRUSEN")
    assert copies(scan) == [("verified", "DRUSEN")]


def test_an_excluded_scan_and_its_corrected_quality_control(grader_t1):
    scan = ScanFactory()
    grade = services.quality_submit(scan=scan, grader=grader_t1, accept=False, reason="severe_artifact")
    assert copies(scan) == [("excluded", "")]
    services.grade_correct(grade=grade, grader=grader_t1, accept=True)
    assert copies(scan) == [("grading", "")]


def test_every_bscan_of_a_volume_carries_the_volume_review(grader_t1, grader_t2, grader_t2b, grader_t3):
    volume = VolumeFactory(slice_count=4)
    scans = list(volume.scans.order_by("slice_index"))
    assert copies(*scans) == [("quality_control", "")] * 4
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    for g in (grader_t2, grader_t2b):
        services.grade_submit(volume=volume, grader=g, label="CNV", findings=FINDINGS, confidence=4, key_slices=[1])
    assert copies(*scans) == [("verification", "")] * 4
    services.verify_submit(volume=volume, grader=grader_t3, final_label="CNV")
    assert copies(*scans) == [("verified", "CNV")] * 4
    assert copies(*scans) == [unit_state(s) for s in scans]


def test_a_volume_of_one_copies_its_scan_review(grader_t1):
    volume = VolumeFactory(slice_count=1)
    scan = volume.scans.get()
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    assert copies(scan) == [("grading", "")] == [unit_state(scan)]


def test_the_migration_fills_the_copies_from_scan_and_volume_reviews(grader_t1, grader_t3):
    migration = import_module("verification.migrations.0007_scan_review_copy")
    alone, verified = ScanFactory(), ScanFactory()
    Review.objects.filter(scan=verified).update(stage="verified", final_label="DME", verified_by=grader_t3,
                                                verified_at=verified.uploaded_at)
    volume = VolumeFactory(slice_count=3)
    Review.objects.filter(volume=volume).update(stage="grading")
    no_review = ScanFactory()
    Review.objects.filter(scan=no_review).delete()
    Scan.objects.update(review_stage="", review_label="")  # as before the copies existed
    migration.copy_reviews(apps, None)
    slices = list(volume.scans.all())
    assert copies(alone, verified, no_review) == [("quality_control", ""), ("verified", "DME"), ("", "")]
    assert copies(*slices) == [("grading", "")] * 3
