"""Issue 16: the verified CSV export pages by keyset, streams batch by batch, and its
content does not depend on where the batches fall."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from django.urls import reverse

from cases.models import Scan
from tests.factories import ScanFactory
from tests.inference.support import make_prediction
from tests.verification.test_views import verified
from verification import exports, selectors
from verification.models import Review

pytestmark = pytest.mark.django_db

TIED = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def verified_scans(grader_t1, grader_t2, grader_t2b, grader_t3):
    """Seven verified scans, four of them uploaded at the same instant (ties for the keyset),
    and two not verified."""
    scans = [ScanFactory() for _ in range(7)]
    for scan in scans:
        verified(scan, grader_t1, [grader_t2, grader_t2b], grader_t3)
        make_prediction(scan, predicted="CNV")
    Scan.objects.filter(pk__in=[s.pk for s in scans[1:5]]).update(uploaded_at=TIED)
    ScanFactory(), ScanFactory()
    return scans


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_is_the_same_whatever_the_batch_size(grader_t3, verified_scans):
    whole = "".join(exports.verified_csv_rows(user=grader_t3, batch=1000))
    assert len(rows(whole)) == 7
    for batch in (1, 2, 3, 7):
        assert "".join(exports.verified_csv_rows(user=grader_t3, batch=batch)) == whole


def test_csv_rows_come_oldest_scan_first_ties_by_id(grader_t3, verified_scans):
    expected = sorted(verified_scans, key=lambda s: (Scan.objects.get(pk=s.pk).uploaded_at, s.pk))
    text = "".join(exports.verified_csv_rows(user=grader_t3, batch=2))
    assert [r["scan_pseudonym"] for r in rows(text)] == [exports.scan_pseudonym(s) for s in expected]


def test_csv_streams_one_chunk_per_batch_with_bounded_queries(grader_t3, verified_scans, django_assert_max_num_queries):
    chunks = exports.verified_csv_rows(user=grader_t3, batch=3)
    assert next(chunks).startswith("unit,scan_pseudonym,")  # the header, before any query
    for expected_rows in (3, 3, 1):
        # One batch: its reviews with their joins, its grades, its readings (no count, no id list).
        with django_assert_max_num_queries(3):
            chunk = next(chunks)
        assert chunk.count("\r\n") == expected_rows
    # The empty batch that ends the scans, then the verified volumes' ids (none here).
    with django_assert_max_num_queries(2):
        assert next(chunks, None) is None


def test_keyset_after_a_review_continues_past_it(verified_scans):
    ordered = list(selectors.verified_reviews())
    assert [r.pk for r in selectors.verified_reviews(after=ordered[2])] == [r.pk for r in ordered[3:]]
    assert list(selectors.verified_reviews(after=ordered[-1])) == []
    assert all(r.stage == Review.Stage.VERIFIED for r in ordered)


def test_csv_download_is_a_streaming_response(client, grader_t3, verified_scans):
    client.force_login(grader_t3)
    for url in (reverse("verification:export_csv"), reverse("v1:verification-api:export_csv")):
        response = client.get(url)
        assert response.status_code == 200 and response.streaming
        assert len(rows(b"".join(response.streaming_content).decode())) == 7
