"""Capped counts and pages: exact below the cap, "cap+" above it, pages still reachable past it."""
from __future__ import annotations

import pytest

from cases.models import Scan
from octportal.api import CappedPageNumberPagination
from octportal.paging import CappedPaginator, capped_counts
from tests.factories import ScanFactory

pytestmark = pytest.mark.django_db


class SmallCap(CappedPaginator):
    cap = 5


@pytest.fixture
def scans():
    return [ScanFactory() for _ in range(12)]


def test_capped_paginator_counts_exactly_below_the_cap(scans):
    paginator = CappedPaginator(Scan.objects.order_by("id"), 4)
    assert paginator.count == 12 and not paginator.capped and paginator.count_label == "12"
    assert paginator.num_pages_label == "3"
    last = paginator.page(3)
    assert not last.has_next() and len(last.object_list) == 4


def test_capped_paginator_pages_past_the_cap(scans):
    paginator = SmallCap(Scan.objects.order_by("id"), 4)
    assert paginator.count == 6 and paginator.capped and paginator.count_label == "5+"
    assert paginator.num_pages_label == "2+"
    seen, number = [], 1
    while True:
        page = paginator.page(number)
        seen += [s.pk for s in page.object_list]
        if not page.has_next():
            break
        number = page.next_page_number()
    assert seen == [s.pk for s in scans] and number == 3  # three full pages, none cut at the count


def test_capped_counts_match_plain_counts_up_to_the_cap(scans):
    qs = Scan.objects.all()
    by_id = qs.filter(pk__lte=scans[2].pk)
    assert capped_counts([qs, by_id, qs.filter(pk__lt=0)], cap=100) == [12, 3, 0]
    assert capped_counts([qs, by_id], cap=5) == [6, 3]  # 6: more than 5
    assert capped_counts([], cap=5) == []


@pytest.mark.parametrize("url", ["/api/scans/", "/api/verification/worklist/1/"])
def test_unversioned_long_lists_cap_their_count_and_still_page_to_the_end(api_client, clinician, grader_t1, scans, monkeypatch, url):
    monkeypatch.setattr(CappedPaginator, "cap", 3)
    monkeypatch.setattr(CappedPageNumberPagination, "page_size", 5)
    api_client.force_authenticate(clinician if "scans" in url else grader_t1)
    body = api_client.get(url).json()
    assert body["count"] == 3 and body["count_capped"] is True
    ids = [r["id"] for r in body["results"]]
    while body["next"]:
        body = api_client.get(body["next"]).json()
        ids += [r["id"] for r in body["results"]]
    assert sorted(ids) == sorted(s.pk for s in scans) and len(ids) == 12


def test_unversioned_list_count_is_exact_below_the_cap(api_client, clinician, scans):
    api_client.force_authenticate(clinician)
    body = api_client.get("/api/scans/").json()
    assert body["count"] == 12 and body["count_capped"] is False
