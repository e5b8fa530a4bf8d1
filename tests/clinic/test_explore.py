"""Issue 14: /explore/, every scan a user may see, filterable, counted, paged; blinding holds."""
from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from cases.models import Scan
from tests.clinic.conftest import read_scan, verify
from tests.factories import CaseFactory, ScanFactory
from tests.inference.support import make_prediction, make_version
from verification import services
from verification.models import Review

pytestmark = pytest.mark.django_db

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}


def explore(client, user, **params):
    client.force_login(user)
    response = client.get(reverse("explore:scans"), params)
    assert response.status_code == 200
    return response


def shown(response) -> set[int]:
    return {s.pk for s in response.context["page"].object_list}


@pytest.mark.parametrize(
    "who,expected",
    [(None, 302), ("no_role_user", 403), ("clinician", 200), ("grader_t1", 200), ("grader_t2", 200), ("admin", 200)],
)
def test_explore_permissions(client, request, who, expected):
    if who:
        client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("explore:scans")).status_code == expected


def test_filters_by_predicted_class_urgency_and_verified_class(client, clinician, grader_t3, version):
    cnv, dme, drusen = read_scan("CNV", version=version), read_scan("DME", version=version), read_scan("DRUSEN", version=version)
    verify(dme, "NORMAL", grader_t3)
    assert shown(explore(client, clinician, predicted="CNV")) == {cnv.pk}
    assert shown(explore(client, clinician, urgency="urgent")) == {cnv.pk, dme.pk}
    assert shown(explore(client, clinician, verified="NORMAL")) == {dme.pk}
    assert shown(explore(client, clinician, agreement="disagree")) == {dme.pk}
    assert shown(explore(client, clinician, agreement="unverified")) == {cnv.pk, drusen.pk}
    assert shown(explore(client, clinician, stage="verified")) == {dme.pk}


def test_filters_by_model_version_date_and_device(client, clinician):
    old = make_version(version="0.9", active=False)
    new = make_version(version="1.0", active=True)
    a = read_scan("CNV", version=old, case=CaseFactory(device="Topcon Maestro", exam_date=date(2026, 1, 5)))
    b = read_scan("CNV", version=new, case=CaseFactory(device="Heidelberg Spectralis", exam_date=date(2026, 6, 1)))
    assert shown(explore(client, clinician, model_version=old.pk)) == {a.pk}
    assert shown(explore(client, clinician, device="topcon")) == {a.pk}
    assert shown(explore(client, clinician, date_from="2026-03-01")) == {b.pk}
    assert shown(explore(client, clinician, date_to="2026-03-01")) == {a.pk}


def test_counts_per_category_follow_the_filters(client, clinician, version):
    for label in ("CNV", "CNV", "DME", "NORMAL"):
        read_scan(label, version=version)
    counts = explore(client, clinician).context["counts"]
    assert dict((c, n) for c, _, n in counts["predicted"]) == {"CNV": 2, "DME": 1, "NORMAL": 1}
    assert dict((c, n) for c, _, n in counts["urgency"]) == {"urgent": 3, "observation": 1}
    counts = explore(client, clinician, urgency="urgent").context["counts"]
    assert dict((c, n) for c, _, n in counts["predicted"]) == {"CNV": 2, "DME": 1}


def test_explore_pages_and_keeps_queries_bounded(client, clinician, version, django_assert_max_num_queries):
    for i in range(30):
        read_scan(("CNV", "DME", "DRUSEN", "NORMAL")[i % 4], version=version)
    client.force_login(clinician)
    client.get(reverse("explore:scans"))
    with django_assert_max_num_queries(12):
        response = client.get(reverse("explore:scans"), {"urgency": "urgent", "page": 1})
    html = response.content.decode()
    assert response.context["page"].paginator.count == 16  # 8 CNV + 8 DME
    assert html.count("data-explore-scan=") == 16
    with django_assert_max_num_queries(12):
        response = client.get(reverse("explore:scans"), {"page": 2})
    assert len(response.context["page"].object_list) == 6
    assert reverse("cases:scan_thumbnail", args=[response.context["page"].object_list[0].pk]) in response.content.decode()


def test_blinded_tier2_grader_sees_no_class_and_cannot_filter_by_it(client, settings, grader_t1, grader_t2, version):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    blinded, graded = read_scan("CNV", version=version), read_scan("CNV", version=version)
    Review.objects.filter(scan__in=[blinded, graded]).update(stage=Review.Stage.GRADING)
    services.grade_submit(scan=graded, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=4)
    response = explore(client, grader_t2)
    assert shown(response) == {blinded.pk, graded.pk}
    html = response.content.decode()
    item = html[html.index(f'data-explore-scan="{blinded.pk}"'):]
    item = item[: item.index("</li>")]
    assert "data-reading-hidden" in item and "CNV" not in item and "urgent" not in item.lower()
    assert shown(explore(client, grader_t2, predicted="CNV")) == {graded.pk}
    assert shown(explore(client, grader_t2, urgency="urgent")) == {graded.pk}
    counts = explore(client, grader_t2).context["counts"]
    assert dict((c, n) for c, _, n in counts["predicted"]) == {"CNV": 1}
    # Patient identifiers are for clinic staff only.
    assert blinded.case.patient.identifier not in html


def test_thumbnail_is_private_uncached_and_audited(client, clinician, no_role_user):
    from auditlog.models import LogEntry

    scan = read_scan("CNV")
    url = reverse("cases:scan_thumbnail", args=[scan.pk])
    client.force_login(no_role_user)
    assert client.get(url).status_code == 403
    client.force_login(clinician)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG") and response["Cache-Control"].startswith("private")
    assert "no-store" in response["Cache-Control"]
    from PIL import Image
    import io

    assert max(Image.open(io.BytesIO(response.content)).size) <= 192
    assert LogEntry.objects.get_for_object(scan).filter(action=LogEntry.Action.ACCESS).exists()


def test_explore_badges_low_confidence_readings_but_not_for_a_blinded_grader(client, settings, clinician, grader_t2, version):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    flagged = ScanFactory(status=Scan.Status.ANALYSED)
    make_prediction(flagged, version, "DME", low_confidence=True)
    read_scan("CNV", version=version)
    html = explore(client, clinician).content.decode()
    assert html.count("data-low-confidence") == 1 and "Low confidence — needs review" in html
    assert "Low confidence" not in explore(client, grader_t2).content.decode()
