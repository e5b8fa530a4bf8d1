"""manage.py seed_scale (the 1M-scan bench database) writes rows every model accepts: a raw
INSERT that misses a new NOT NULL column fails here, not on the bench machine."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from cases.models import Scan
from inference.models import Prediction
from verification.models import Grade, Review

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(connection.vendor != "postgresql", reason="seed_scale writes with PostgreSQL's generate_series")
def test_seed_scale_fills_scans_readings_reviews_and_grades():
    # The id sequence ahead of max(id), as after a rolled-back seed or other tests' rows.
    with connection.cursor() as cur:
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{Scan._meta.db_table}', 'id'), 1037)")
    call_command("seed_scale", scans=200)
    assert Scan.objects.count() == 200
    assert Prediction.objects.count() == 200 and Review.objects.count() == 200
    # 2.0 grades per scan on average, every review in a stage its grades imply.
    assert 300 <= Grade.objects.count() <= 500
    assert set(Review.objects.values_list("stage", flat=True)) >= {Review.Stage.QUALITY_CONTROL, Review.Stage.VERIFIED}
    # The reading's and the review's copies on the scan agree with the rows they copy.
    for scan in Scan.objects.select_related("review"):
        assert scan.current_class == Prediction.objects.get(scan=scan).predicted
        assert scan.review_stage == scan.review.stage
        assert scan.review_label == (scan.review.final_label if scan.review.stage == Review.Stage.VERIFIED else "")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="seed_scale writes with PostgreSQL's generate_series")
def test_seed_scale_adds_volumes_reviewed_as_one_eye():
    from cases.models import Volume
    from verification import selectors

    call_command("seed_scale", scans=100, volumes=20, slices=5)
    assert Volume.objects.count() == 20 and Scan.objects.filter(volume__isnull=False).count() == 100
    assert Review.objects.filter(volume__isnull=False).count() == 20
    assert not Review.objects.filter(scan__volume__isnull=False).exists()  # no review per B-scan
    for volume in Volume.objects.select_related("review"):
        review = volume.review
        slices = list(volume.scans.order_by("slice_index"))
        assert [s.slice_index for s in slices] == list(range(5)) and volume.case.scans.count() == 5
        assert {(s.review_stage, s.review_label) for s in slices} == {
            (review.stage, review.final_label if review.stage == Review.Stage.VERIFIED else "")
        }
        assert all(s.current_class == Prediction.objects.get(scan=s).predicted for s in slices)
        grades = Grade.objects.filter(volume=volume)
        assert grades.filter(tier=3).exists() == (review.stage == Review.Stage.VERIFIED)
        assert grades.filter(tier=2).count() == {"grading": 1, "verification": 2, "arbitration": 2, "verified": 2}.get(
            review.stage, 0
        )
    grader = Grade.objects.filter(tier=1).first().grader
    assert selectors.volume_worklist_for(user=grader, tier=1).count() == Review.objects.filter(
        volume__isnull=False, stage=Review.Stage.QUALITY_CONTROL
    ).count()


@pytest.mark.skipif(connection.vendor == "postgresql", reason="checks the refusal off PostgreSQL")
def test_seed_scale_refuses_sqlite():
    with pytest.raises(CommandError, match="PostgreSQL"):
        call_command("seed_scale", scans=200)
