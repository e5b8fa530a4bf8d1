"""Issue 14: /explore/, every scan a user may see, filterable, counted, paged; blinding holds."""
from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from django.urls import reverse

from cases.models import Scan
from cases.roles import Role
from inference.selectors import prediction_current
from tests.clinic.conftest import read_scan, verify
from tests.factories import CaseFactory, ScanFactory, review_update
from tests.inference.support import make_prediction, make_version
from verification import blinding, selectors, services
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


def test_a_blinded_tier2_graders_explore_keeps_queries_bounded(client, settings, grader_t2, version,
                                                               django_assert_max_num_queries):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    for i in range(30):
        read_scan(("CNV", "DME", "DRUSEN", "NORMAL")[i % 4], version=version)
    client.force_login(grader_t2)
    client.get(reverse("explore:scans"))
    with django_assert_max_num_queries(12):
        response = client.get(reverse("explore:scans"), {"stage": Review.Stage.QUALITY_CONTROL})
    assert response.context["page"].paginator.count == 30


def test_blinded_tier2_grader_sees_no_class_and_cannot_filter_by_it(client, settings, grader_t1, grader_t2, version):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    blinded, graded = read_scan("CNV", version=version), read_scan("CNV", version=version)
    review_update(scans=[blinded, graded], stage=Review.Stage.GRADING)
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


def naive_counts(user, scans) -> dict[str, dict[str, int]]:
    """What the counts must be, scan by scan through the blinding rule and the current reading."""
    predicted, urgency, stage = Counter(), Counter(), Counter()
    for scan in scans:
        review = Review.objects.filter(scan=scan).first()
        if review is not None:
            stage[review.stage] += 1
        reading = prediction_current(scan=scan)
        if reading is not None and reading.gate_passed and blinding.may_see_reading(user=user, scan=scan):
            predicted[reading.predicted] += 1
            urgency[reading.urgency] += 1
    return {"predicted": dict(predicted), "urgency": dict(urgency), "stage": dict(stage)}


def shown_counts(response) -> dict[str, dict[str, int]]:
    return {group: {c.code: c.n for c in rows} for group, rows in response.context["counts"].items()}


@pytest.fixture
def mixed_scans(version, grader_t2, grader_t3):
    """Scans of every class in several stages, one refused by the gate, two graded by grader_t2."""
    stages = [Review.Stage.QUALITY_CONTROL, Review.Stage.GRADING, Review.Stage.VERIFICATION, Review.Stage.VERIFIED]
    scans = []
    for i, label in enumerate(["CNV", "CNV", "CNV", "DME", "DME", "DRUSEN", "NORMAL", "NORMAL", "CNV"]):
        scan = read_scan(label, version=version)
        stage = stages[i % len(stages)]
        if stage == Review.Stage.VERIFIED:
            verify(scan, label, grader_t3)
        else:
            review_update(scans=scan, stage=stage)
        scans.append(scan)
    scans.append(read_scan("CNV", version=version, gate_passed=False))
    for scan in (scans[1], scans[3]):  # a CNV and a DME, graded in tier 2, then on to verification
        review_update(scans=scan, stage=Review.Stage.GRADING)
        services.grade_submit(scan=scan, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=4)
        review_update(scans=scan, stage=Review.Stage.VERIFICATION)
    return scans


@pytest.mark.parametrize("who", ["clinician", "grader_t1", "grader_t2", "grader_t2_t3", "admin"])
def test_counts_equal_a_naive_count_through_the_blinding_rule(client, settings, request, user_factory, mixed_scans, who):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    if who == "grader_t2_t3":
        user = user_factory("both", Role.GRADER_T2, Role.GRADER_T3)
    else:
        user = request.getfixturevalue(who)
    assert shown_counts(explore(client, user)) == naive_counts(user, mixed_scans)
    # And over a filtered set: the counts follow the filters.
    for stage in (Review.Stage.GRADING, Review.Stage.VERIFICATION):
        matching = [s for s in mixed_scans if Review.objects.get(scan=s).stage == stage]
        assert shown_counts(explore(client, user, stage=stage)) == naive_counts(user, matching)


def test_blinded_tier2_counts_tell_nothing_of_hidden_readings(client, settings, grader_t2, mixed_scans):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    counts = shown_counts(explore(client, grader_t2))
    # Only the two scans grader_t2 graded (CNV and DME) have a visible reading.
    assert counts["predicted"] == {"CNV": 1, "DME": 1}
    assert counts["urgency"] == {"urgent": 2}
    assert sum(counts["stage"].values()) == len(mixed_scans)  # the stage is not blinded
    html = explore(client, grader_t2).content.decode()
    assert 'data-count-predicted="NORMAL"' not in html and 'data-count-predicted="DRUSEN"' not in html


def test_counts_stop_at_the_cap_and_say_so(client, clinician, version, monkeypatch):
    monkeypatch.setattr(selectors, "EXPLORE_COUNT_CAP", 2)
    for label in ("CNV", "CNV", "CNV", "DME", "DME"):
        read_scan(label, version=version)
    response = explore(client, clinician)
    counts = {c.code: (c.n, c.text) for c in response.context["counts"]["predicted"]}
    assert counts == {"CNV": (3, "2+"), "DME": (2, "2")}
    html = response.content.decode()
    assert 'data-count-predicted="CNV">CNV <strong>2+</strong>' in html


def test_device_text_matches_every_device_name_that_contains_it(client, clinician):
    a = read_scan("CNV", case=CaseFactory(device="Heidelberg Spectralis HRA+OCT"))
    b = read_scan("DME", case=CaseFactory(device="Heidelberg Spectralis"))
    read_scan("DME", case=CaseFactory(device="Topcon Maestro2"))
    assert shown(explore(client, clinician, device="SPECTRALIS")) == {a.pk, b.pk}
    assert shown(explore(client, clinician, device="cirrus")) == set()
    from cases import selectors as cases_selectors

    assert cases_selectors.devices_in_use() == ["Heidelberg Spectralis", "Heidelberg Spectralis HRA+OCT", "Topcon Maestro2"]


def test_counts_under_a_filter_on_the_examination_are_taken_among_the_newest_and_say_so(
    client, clinician, version, monkeypatch
):
    case = CaseFactory(device="Heidelberg Spectralis")
    for label in ("CNV", "DME", "DME", "NORMAL"):  # uploaded in this order: NORMAL newest
        read_scan(label, version=version, case=case)
    everything = explore(client, clinician, device="spectralis")
    assert everything.context["counts"].sample is None  # all four counted: exact
    assert shown_counts(everything)["predicted"] == {"CNV": 1, "DME": 2, "NORMAL": 1}
    monkeypatch.setattr(selectors, "EXPLORE_COUNT_SAMPLE", 2)
    newest = explore(client, clinician, device="spectralis")
    assert newest.context["counts"].sample == 2
    assert shown_counts(newest)["predicted"] == {"DME": 1, "NORMAL": 1}
    assert "Counted among the first 2 matching scans in the page's order" in newest.content.decode()
    assert shown(newest) == set(Scan.objects.filter(case=case).values_list("pk", flat=True))  # the page is not sampled


def test_counts_under_a_filter_on_the_examination_are_exact_when_just_the_sample_matches(
    client, clinician, version, monkeypatch
):
    case = CaseFactory(device="Heidelberg Spectralis")
    for label in ("CNV", "DME"):
        read_scan(label, version=version, case=case)
    monkeypatch.setattr(selectors, "EXPLORE_COUNT_SAMPLE", 2)
    response = explore(client, clinician, device="spectralis")
    assert response.context["counts"].sample is None  # both matching scans counted: no sample
    assert shown_counts(response)["predicted"] == {"CNV": 1, "DME": 1}
    assert "data-counts-sample" not in response.content.decode()


@pytest.mark.parametrize("drive_max", [0, 5_000])
def test_both_ways_of_asking_what_a_tier2_grader_may_see_agree(client, settings, monkeypatch, grader_t2, user_factory,
                                                                 mixed_scans, drive_max):
    """``reading_visible_q`` lists a grader's graded scans from their grades (few) or asks
    per scan (many): the same scans either way."""
    settings.VERIFICATION_READING_CENTRE_MODE = True
    monkeypatch.setattr(blinding, "GRADED_DRIVE_MAX", drive_max)
    both = user_factory("both", Role.GRADER_T2, Role.GRADER_T3)
    for user in (grader_t2, both):
        user.__dict__.pop("_oct_few_tier2_grades", None)
        visible = set(Scan.objects.filter(blinding.reading_visible_q(user=user)).values_list("pk", flat=True))
        assert visible == {s.pk for s in mixed_scans if blinding.may_see_reading(user=user, scan=s)}
        assert shown_counts(explore(client, user)) == naive_counts(user, mixed_scans)


def test_bscans_of_a_volume_show_and_filter_by_the_eyes_stage(client, clinician, grader_t1, version):
    from tests.factories import VolumeFactory

    volume = VolumeFactory(slice_count=3)
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    alone = read_scan("CNV", version=version)
    slices = set(volume.scans.values_list("pk", flat=True))
    assert shown(explore(client, clinician, stage=Review.Stage.GRADING)) == slices
    assert shown(explore(client, clinician, stage=Review.Stage.QUALITY_CONTROL)) == {alone.pk}
    html = explore(client, clinician).content.decode()
    assert html.count('data-stage="grading"') == 3 and "Eye: Independent grading (tier 2)" in html


def test_a_date_filter_orders_by_exam_date_newest_first(client, clinician, version):
    march = read_scan("CNV", version=version, case=CaseFactory(exam_date=date(2021, 3, 1)))
    january = read_scan("DME", version=version, case=CaseFactory(exam_date=date(2021, 1, 10)))  # uploaded last
    read_scan("NORMAL", version=version, case=CaseFactory(exam_date=date(2022, 5, 1)))
    response = explore(client, clinician, date_from="2021-01-01", date_to="2021-12-31")
    assert [s.pk for s in response.context["page"].object_list] == [march.pk, january.pk]
    # Without it, newest upload first.
    assert [s.pk for s in explore(client, clinician, predicted="DME").context["page"].object_list] == [january.pk]


@pytest.mark.parametrize("drive_max", [0, 5_000])
def test_sampled_counts_of_a_blinded_tier2_grader_follow_the_blinding_rule(client, settings, monkeypatch, grader_t2,
                                                                            mixed_scans, drive_max):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    monkeypatch.setattr(blinding, "GRADED_DRIVE_MAX", drive_max)
    grader_t2.__dict__.pop("_oct_few_tier2_grades", None)
    device = mixed_scans[0].case.device
    matching = [s for s in mixed_scans if device.casefold() in s.case.device.casefold()]
    response = explore(client, grader_t2, device=device)
    assert response.context["counts"].sample is None  # fewer than 2,000: exact
    assert shown_counts(response) == naive_counts(grader_t2, matching)
