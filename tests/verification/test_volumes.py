"""A volume of more than one B-scan is one review unit: tier 1 accepts or excludes the
volume, tier 2 grades the eye (with key B-scans), tier 3 verifies it; blinding,
worklists, pages, API, statistics and exports count it once, as a volume."""
from __future__ import annotations

import csv
import io
import zipfile
from importlib import import_module

import pytest
from django.apps import apps
from django.urls import reverse

from cases.diagnoses import Diagnosis
from cases.models import Scan
from intake import volumes as intake_volumes
from octportal.errors import Conflict, DomainError
from tests.factories import CaseFactory, ScanFactory, VolumeFactory, bscan_bytes, synthetic_bscan_png
from tests.inference.support import make_prediction
from verification import blinding, selectors, services
from verification import statistics as st
from verification.models import Grade, Review
from verification.reports import report_data, report_fingerprint

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}
CNV_FINDINGS = {**NO_FINDINGS, "cnv": True}


@pytest.fixture(autouse=True)
def reading_centre(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.VERIFICATION_READING_CENTRE_MODE = True
    settings.VERIFICATION_REQUIRED_GRADES = 2


@pytest.fixture
def volume(db):
    return VolumeFactory(slice_count=5)


def read(volume, urgent=(2,)):
    """Give every B-scan a reading (CNV with a heatmap where ``urgent``, else NORMAL)."""
    for scan in volume.scans.all():
        hot = scan.slice_index in urgent
        make_prediction(scan, predicted=Diagnosis.CNV if hot else Diagnosis.NORMAL, confidence=0.9,
                        heatmap=synthetic_bscan_png(16, 16) if hot else None)
        Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.ANALYSED)


def to_verification(volume, t1, t2s, labels, keys=((2,), (2, 3))):
    services.quality_submit(volume=volume, grader=t1, accept=True)
    for g, label, key in zip(t2s, labels, keys):
        services.grade_submit(volume=volume, grader=g, label=label, findings=CNV_FINDINGS, confidence=4,
                              key_slices=list(key))


def login(client, user):
    client.force_login(user)
    return client


# --- one review per volume ------------------------------------------------------------------

def test_a_volume_has_one_review_and_its_bscans_none(volume):
    assert Review.objects.filter(volume=volume).count() == 1
    assert not Review.objects.filter(scan__volume=volume).exists()


def test_a_volume_of_one_keeps_the_per_scan_review(db, grader_t1):
    one = VolumeFactory(slice_count=1)
    scan = one.scans.get()
    assert Review.objects.filter(scan=scan).count() == 1 and not Review.objects.filter(volume=one).exists()
    assert list(selectors.worklist_for(user=grader_t1, tier=1)) == [scan]
    g = services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    assert g.scan_id == scan.pk and g.volume_id is None


def test_a_volume_import_opens_one_review(db, clinician):

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for n in range(1, 4):
            archive.writestr(f"slice-{n}.png", bscan_bytes(seed=n))
    source = intake_volumes.volume_source_read(buf.getvalue(), name="v.zip")
    volume = intake_volumes.volume_submit(case=CaseFactory(), source=source, uploaded_by=clinician, eye="OD")
    assert volume.scans.count() == 3
    assert list(Review.objects.values_list("volume_id", "scan_id", "stage")) == [(volume.pk, None, "quality_control")]
    # Every B-scan carries its volume's stage (explore filters on the copy).
    assert list(volume.scans.values_list("review_stage", flat=True)) == ["quality_control"] * 3


def test_the_worklists_hold_the_volume_once_and_none_of_its_bscans(volume, grader_t1):
    single = ScanFactory()
    assert list(selectors.worklist_for(user=grader_t1, tier=1)) == [single]
    assert list(selectors.volume_worklist_for(user=grader_t1, tier=1)) == [volume]
    assert selectors.next_in_worklist(user=grader_t1, tier=1) == volume  # the older one
    assert selectors.next_in_worklist(user=grader_t1, tier=1, after=volume) == single


# --- tier 1: a volume the input gate rejected all of -----------------------------------------

def gate_reject(volume, *, except_slices=(), still_waiting=(), failed_otherwise=()):
    """Leave each B-scan as the run service does: refused by the input gate (failed, reading
    with gate_passed false), except those read normally, still queued or failed for another reason."""
    for scan in volume.scans.all():
        i = scan.slice_index
        if i in still_waiting:
            Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.QUEUED)
        elif i in failed_otherwise:
            Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.FAILED, status_detail="cannot decode")
        else:
            passed = i in except_slices
            make_prediction(scan, predicted=Diagnosis.NORMAL, gate_passed=passed)
            status = Scan.Status.ANALYSED if passed else Scan.Status.FAILED
            Scan.objects.filter(pk=scan.pk).update(status=status)


def test_tier1_hides_a_volume_the_gate_rejected_every_bscan_of_unless_asked(db, grader_t1, grader_t2):
    rejected, good = VolumeFactory(slice_count=3), VolumeFactory(slice_count=3)
    gate_reject(rejected)
    read(good, urgent=())
    assert list(selectors.volume_worklist_for(user=grader_t1, tier=1)) == [good]
    shown = selectors.volume_worklist_for(user=grader_t1, tier=1, include_gate_rejected=True)
    assert [(v, v.gate_rejected) for v in shown] == [(rejected, True), (good, False)]
    # "Start grading" never lands on it, though it is the older one.
    assert selectors.next_in_worklist(user=grader_t1, tier=1) == good
    # Tier 1 may still accept it (shown on asking); later tiers do not filter.
    services.quality_submit(volume=rejected, grader=grader_t1, accept=True)
    assert list(selectors.volume_worklist_for(user=grader_t2, tier=2)) == [rejected]


@pytest.mark.parametrize("kept", [{"except_slices": (1,)}, {"still_waiting": (2,)}, {"failed_otherwise": (0,)}],
                         ids=["one-bscan-passed", "one-bscan-waiting", "one-bscan-failed-otherwise"])
def test_a_volume_the_gate_rejected_only_in_part_stays_in_the_tier1_worklist(db, grader_t1, kept):
    volume = VolumeFactory(slice_count=3)
    gate_reject(volume, **kept)
    [listed] = selectors.volume_worklist_for(user=grader_t1, tier=1)
    assert listed == volume and listed.gate_rejected is False


def test_the_tier1_page_and_api_hide_gate_rejected_volumes_with_the_scans_toggle(client, api_client, grader_t1):
    rejected, good = VolumeFactory(slice_count=3), VolumeFactory(slice_count=3)
    gate_reject(rejected)
    read(good, urgent=())
    url = reverse("verification:worklist", args=[1])
    default = login(client, grader_t1).get(url).content.decode()
    assert reverse("verification:grade_volume", args=[good.pk, 1]) in default
    assert reverse("verification:grade_volume", args=[rejected.pk, 1]) not in default and "?rejected=1" in default
    shown = client.get(url + "?rejected=1").content.decode()
    assert reverse("verification:grade_volume", args=[rejected.pk, 1]) in shown and "no OCT B-scan" in shown
    assert client.get(reverse("verification:worklist_next", args=[1])).url == reverse(
        "verification:grade_volume", args=[good.pk, 1])
    api_client.force_authenticate(grader_t1)
    api = reverse("verification-api:volume_worklist", args=[1])
    assert [r["id"] for r in api_client.get(api).json()["results"]] == [good.pk]
    assert [r["id"] for r in api_client.get(api + "?rejected=1").json()["results"]] == [rejected.pk, good.pk]


# --- tier 1, 2, 3 on a volume -----------------------------------------------------------------

def test_tier_1_2_3_on_a_volume_with_key_slices(volume, grader_t1, grader_t2, grader_t2b, grader_t3):
    qc = services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    assert (qc.volume_id, qc.scan_id) == (volume.pk, None)
    assert Review.objects.get(volume=volume).stage == Review.Stage.GRADING
    assert list(selectors.volume_worklist_for(user=grader_t2, tier=2)) == [volume]
    a = services.grade_submit(volume=volume, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS,
                              confidence=4, key_slices=[3, 1, 3])
    assert a.key_slices == [1, 3]
    services.grade_submit(volume=volume, grader=grader_t2b, label=Diagnosis.DME, findings=NO_FINDINGS, confidence=3)
    assert Review.objects.get(volume=volume).stage == Review.Stage.ARBITRATION
    services.verify_submit(volume=volume, grader=grader_t3, final_label=Diagnosis.CNV, note="CNV on 2 and 4")
    review = Review.objects.get(volume=volume)
    assert review.stage == Review.Stage.VERIFIED and review.final_label == Diagnosis.CNV
    assert Grade.objects.filter(volume=volume).count() == 4 and not Grade.objects.filter(scan__volume=volume).exists()
    with pytest.raises(Conflict):  # verified: tier 2 can no longer be corrected
        services.grade_correct(grade=a, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS, confidence=5)


def test_tier_2_correction_of_a_volume_grade_keeps_the_original(volume, grader_t1, grader_t2):
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    a = services.grade_submit(volume=volume, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS,
                              confidence=4, key_slices=[1])
    b = services.grade_correct(grade=a, grader=grader_t2, label=Diagnosis.DME, findings=NO_FINDINGS, confidence=3,
                               key_slices=[0, 4])
    assert (b.volume_id, b.supersedes_id, b.key_slices) == (volume.pk, a.pk, [0, 4])
    assert list(Grade.objects.current().filter(volume=volume, tier=2)) == [b]


def test_a_volumes_key_bscans_are_those_its_current_tier2_grades_marked(volume, grader_t1, grader_t2, grader_t2b):
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    a = services.grade_submit(volume=volume, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS,
                              confidence=4, key_slices=[1])
    services.grade_correct(grade=a, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS, confidence=4,
                           key_slices=[4, 0])
    services.grade_submit(volume=volume, grader=grader_t2b, label=Diagnosis.CNV, findings=CNV_FINDINGS,
                          confidence=4, key_slices=[2, 4])
    assert [s.slice_index for s in selectors.volume_key_scans(volume=volume)] == [0, 2, 4]  # not 1: corrected away
    grades = list(Grade.objects.filter(volume=volume, tier=2))
    assert selectors.key_slices_of(grades) == [0, 2, 4]


@pytest.mark.parametrize("keys", [[5], [-1], ["2"], [True], [1.5]])
def test_key_slices_outside_the_volume_or_not_indices_are_refused(volume, grader_t1, grader_t2, keys):
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    with pytest.raises(DomainError) as err:
        services.grade_submit(volume=volume, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS,
                              confidence=4, key_slices=keys)
    assert "key_slices" in err.value.errors
    assert not Grade.objects.filter(volume=volume, tier=2).exists()


def test_key_slices_are_for_volumes_only(db, grader_t1, grader_t2):
    scan = ScanFactory()
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    with pytest.raises(DomainError):
        services.grade_submit(scan=scan, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS,
                              confidence=4, key_slices=[0])


def test_a_bscan_of_a_volume_is_not_graded_on_its_own(volume, grader_t1):
    with pytest.raises(Conflict, match="grade the volume"):
        services.quality_submit(scan=volume.scans.first(), grader=grader_t1, accept=True)


def test_tier_1_excludes_the_whole_volume(volume, grader_t1, grader_t2):
    services.quality_submit(volume=volume, grader=grader_t1, accept=False, reason="severe_artifact")
    review = Review.objects.get(volume=volume)
    assert review.stage == Review.Stage.EXCLUDED and review.exclusion_reason == "severe_artifact"
    assert not selectors.volume_worklist_for(user=grader_t2, tier=2).exists()


# --- blinding ---------------------------------------------------------------------------------

def test_tier_2_is_blinded_on_every_bscan_of_the_volume_until_their_grade_is_in(volume, grader_t1, grader_t2):
    read(volume)
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    ids = set(volume.scans.values_list("pk", flat=True))
    assert not blinding.may_see_reading(user=grader_t2, volume=volume)
    assert not any(blinding.may_see_reading(user=grader_t2, scan=s) for s in volume.scans.all())
    assert blinding.reading_visible_ids(user=grader_t2, scan_ids=ids) == set()
    assert not Scan.objects.filter(blinding.reading_visible_q(user=grader_t2), pk__in=ids).exists()
    assert blinding.reading_visible_ids(user=grader_t1, scan_ids=ids) == ids
    single = ScanFactory()  # graded alone by the same grader: visible, in SQL too
    services.quality_submit(scan=single, grader=grader_t1, accept=True)
    services.grade_submit(scan=single, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS, confidence=4)
    assert list(Scan.objects.filter(blinding.reading_visible_q(user=grader_t2))) == [single]
    services.grade_submit(volume=volume, grader=grader_t2, label=Diagnosis.CNV, findings=CNV_FINDINGS, confidence=4)
    assert blinding.may_see_reading(user=grader_t2, volume=volume)
    assert blinding.reading_visible_ids(user=grader_t2, scan_ids=ids) == ids
    assert Scan.objects.filter(blinding.reading_visible_q(user=grader_t2)).count() == len(ids) + 1


def test_the_tier_2_volume_page_shows_no_reading_heatmap_or_other_grades(client, volume, grader_t1, grader_t2,
                                                                         grader_t2b):
    read(volume, urgent=(2,))
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    services.grade_submit(volume=volume, grader=grader_t2b, label=Diagnosis.DME, findings=NO_FINDINGS, confidence=2,
                          comment="other grader's note")
    page = login(client, grader_t2).get(reverse("verification:grade_volume", args=[volume.pk, 2]))
    html = page.content.decode()
    assert page.status_code == 200 and "data-volume-viewer" in html and "data-slice-slider" in html
    assert "Per-eye reading" not in html and "vf-blinded" in html
    assert "/heatmap" not in html and "data-viewer-no-heatmap" in html
    assert "other grader's note" not in html and grader_t2b.username not in html
    assert 'data-reference=""' in html and "key_bscans" in html
    # After grading, the same grader sees the reading and the other grade.
    client.post(reverse("verification:grade_volume", args=[volume.pk, 2]),
                {"label": "CNV", "cnv": "on", "confidence": "4", "key_bscans": "3, 4", "then": "stay"})
    assert Grade.objects.get(volume=volume, grader=grader_t2).key_slices == [2, 3]
    html = client.get(reverse("verification:grade_volume", args=[volume.pk, 2])).content.decode()
    assert "Per-eye reading" in html and "/heatmap" in html and "other grader&#x27;s note" in html


def test_the_grade_page_of_a_bscan_of_a_volume_opens_the_volume(client, volume, grader_t1):
    response = login(client, grader_t1).get(reverse("verification:grade", args=[volume.scans.first().pk, 1]))
    assert response.status_code == 302 and response.url == reverse("verification:grade_volume", args=[volume.pk, 1])


def test_the_tier_1_page_of_a_read_volume_shows_the_eyes_reading(client, volume, grader_t1):
    # The form's data-reference once failed on volumes ("reference" is a scan's): a 500.
    read(volume)
    response = login(client, grader_t1).get(reverse("verification:grade_volume", args=[volume.pk, 1]))
    assert response.status_code == 200
    assert 'data-reference="CNV"' in response.content.decode()


def test_key_bscans_out_of_range_on_the_page_are_refused(client, volume, grader_t1, grader_t2):
    services.quality_submit(volume=volume, grader=grader_t1, accept=True)
    response = login(client, grader_t2).post(reverse("verification:grade_volume", args=[volume.pk, 2]),
                                              {"label": "CNV", "confidence": "4", "key_bscans": "6"})
    assert response.status_code == 400 and not Grade.objects.filter(volume=volume, tier=2).exists()


def test_the_worklist_page_lists_the_volume_once_and_save_and_next_opens_the_next_unit(client, volume, grader_t1):
    single = ScanFactory()
    html = login(client, grader_t1).get(reverse("verification:worklist", args=[1])).content.decode()
    assert html.count(reverse("verification:grade_volume", args=[volume.pk, 1])) == 1
    assert reverse("verification:grade", args=[volume.scans.first().pk, 1]) not in html
    assert client.get(reverse("verification:worklist_next", args=[1])).url == reverse(
        "verification:grade_volume", args=[volume.pk, 1])
    response = client.post(reverse("verification:grade_volume", args=[volume.pk, 1]), {"decision": "accept"})
    assert response.url == reverse("verification:grade", args=[single.pk, 1])


def test_the_verified_label_of_the_eye_shows_on_the_examination_and_scan_pages(
    client, volume, clinician, grader_t1, grader_t2, grader_t2b, grader_t3
):
    to_verification(volume, grader_t1, [grader_t2, grader_t2b], [Diagnosis.DRUSEN, Diagnosis.DRUSEN])
    services.verify_submit(volume=volume, grader=grader_t3, final_label=Diagnosis.DRUSEN)
    html = login(client, clinician).get(reverse("cases:case_detail", args=[volume.case_id])).content.decode()
    assert f'data-volume-review="{volume.pk}"' in html and 'data-final-label="DRUSEN"' in html
    html = client.get(reverse("cases:scan_detail", args=[volume.scans.first().pk])).content.decode()
    assert "graded with its volume" in html and "Verified label of the eye" in html


# --- API --------------------------------------------------------------------------------------

def test_api_grades_a_volume_and_blinds_tier_2(api_client, volume, grader_t1, grader_t2, grader_t2b):
    read(volume)
    base = f"/api/v1/verification/volumes/{volume.pk}"
    api_client.force_authenticate(grader_t1)
    assert api_client.get("/api/v1/verification/worklist/1/volumes/").json()["results"][0]["id"] == volume.pk
    assert api_client.post(f"{base}/grades/", {"tier": 1, "decision": "accept"}, format="json").status_code == 201
    api_client.force_authenticate(grader_t2b)
    r = api_client.post(f"{base}/grades/", {"tier": 2, "label": "DME", "confidence": 3, "key_slices": [0]}, format="json")
    assert r.status_code == 201 and r.json()["unit"] == "volume" and r.json()["key_slices"] == [0]
    api_client.force_authenticate(grader_t2)
    state = api_client.get(f"{base}/").json()
    assert state["unit"] == "volume" and state["stage"] == "grading"
    assert state["eye_reading"] is None and state["may_see_reference"] is False
    assert [g["tier"] for g in state["grades"]] == [1] and "DME" not in str(state) and "CNV" not in str(state)
    item = api_client.get("/api/v1/verification/worklist/2/volumes/").json()["results"][0]
    assert (item["id"], item["model_urgent"]) == (volume.pk, None)
    r = api_client.post(f"{base}/grades/", {"tier": 2, "label": "CNV", "confidence": 4, "key_slices": [9]}, format="json")
    assert r.status_code == 400 and "key_slices" in r.json()["errors"]
    r = api_client.post(f"{base}/grades/", {"tier": 2, "label": "CNV", "cnv": True, "confidence": 4,
                                            "key_slices": [2, 3]}, format="json")
    assert r.status_code == 201
    state = api_client.get(f"{base}/").json()
    assert state["stage"] == "arbitration" and state["eye_reading"]["diagnosis"] == "CNV"
    assert len(state["grades"]) == 3
    # A B-scan of the volume is not graded through the scan endpoint.
    scan = volume.scans.first()
    assert api_client.get(f"/api/v1/verification/scans/{scan.pk}/").json()["graded_as_volume"] == volume.pk
    api_client.force_authenticate(grader_t1)
    r = api_client.post(f"/api/v1/verification/scans/{scan.pk}/grades/", {"tier": 1, "decision": "accept"}, format="json")
    assert r.status_code == 409
    single = ScanFactory()
    services.quality_submit(scan=single, grader=grader_t1, accept=True)
    api_client.force_authenticate(grader_t2)
    r = api_client.post(f"/api/v1/verification/scans/{single.pk}/grades/",
                        {"tier": 2, "label": "CNV", "confidence": 4, "key_slices": [0]}, format="json")
    assert r.status_code == 400 and "key_slices" in r.json()["errors"]


def test_api_volume_of_one_is_graded_as_its_scan(api_client, db, grader_t1):
    one = VolumeFactory(slice_count=1)
    api_client.force_authenticate(grader_t1)
    assert api_client.get(f"/api/v1/verification/volumes/{one.pk}/").status_code == 404


# --- statistics and exports -------------------------------------------------------------------

def test_statistics_count_scans_and_volumes_apart(volume, grader_t1, grader_t2, grader_t2b, grader_t3):
    read(volume)
    to_verification(volume, grader_t1, [grader_t2, grader_t2b], [Diagnosis.CNV, Diagnosis.CNV])
    services.verify_submit(volume=volume, grader=grader_t3, final_label=Diagnosis.CNV)
    scan = ScanFactory()
    services.quality_submit(scan=scan, grader=grader_t1, accept=False, reason="low_resolution")
    snapshot = selectors.statistics_snapshot(labels=list(Diagnosis.values), fresh=True)
    by_scan, by_volume = snapshot.by_unit["scan"], snapshot.by_unit["volume"]
    assert (by_scan.unit, by_scan.qc_total, by_scan.qc_excluded, by_scan.pairwise) == ("scan", 1, 1, [])
    assert (by_volume.unit, by_volume.qc_total, by_volume.qc_excluded) == ("volume", 1, 0)
    assert [(p["a"], p["b"], p["n"], p["agreement"]) for p in by_volume.pairwise] == [
        (grader_t2.username, grader_t2b.username, 1, 1.0)]
    assert by_volume.model_vs_final.n == 1 and by_volume.model_vs_final.accuracy == 1.0  # per-eye reading CNV
    assert dict(by_volume.stages) == {"verified": 1} and dict(by_scan.stages) == {"excluded": 1}


def test_statistics_of_volumes_counted_by_the_database_equal_the_counts_of_the_rows(
    volume, grader_t1, grader_t2, grader_t2b, grader_t3
):
    labels = list(Diagnosis.values)
    other = VolumeFactory(slice_count=3)
    to_verification(volume, grader_t1, [grader_t2, grader_t2b], [Diagnosis.CNV, Diagnosis.DME])
    services.verify_submit(volume=volume, grader=grader_t3, final_label=Diagnosis.DME)
    to_verification(other, grader_t1, [grader_t2], [Diagnosis.NORMAL], keys=((),))
    ScanFactory()  # a scan unit: not counted here
    current = Grade.objects.current().select_related("grader")
    rows = [
        {"scan_id": x.scan_id, "volume_id": x.volume_id, "tier": x.tier, "grader_id": x.grader_id,
         "grader__username": x.grader.username, "label": x.label, "accepted": x.accepted,
         "exclusion_reason": x.exclusion_reason, "time_taken_ms": x.time_taken_ms}
        for x in current
    ]
    reviews = list(Review.objects.values("scan_id", "volume_id", "stage", "final_label"))
    expected = st.aggregate_rows(grades=rows, reviews=reviews, sources={}, predictions={}, labels=labels,
                                 key="volume_id")
    counted = selectors.statistics_aggregates(labels=labels, unit="volume")
    for name in ("names", "pair_tables", "patterns", "grader_final", "qc", "stages"):
        got, want = getattr(counted, name), getattr(expected, name)
        assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}, name


def test_statistics_api_says_which_unit_it_counts(api_client, grader_t3):
    api_client.force_authenticate(grader_t3)
    assert api_client.get("/api/v1/verification/statistics/").json()["unit"] == "scan"
    assert api_client.get("/api/v1/verification/statistics/?unit=volume").json()["unit"] == "volume"
    assert api_client.get("/api/v1/verification/statistics/?unit=eye").status_code == 400


def test_statistics_page_shows_both_units(client, volume, grader_t1, grader_t3):
    services.quality_submit(volume=volume, grader=grader_t1, accept=False, reason="other")
    html = login(client, grader_t3).get(reverse("verification:statistics") + "?fresh=1").content.decode()
    assert 'data-unit="scan"' in html and 'data-unit="volume"' in html


def test_exports_cover_scans_and_volumes_with_a_unit_column(client, volume, grader_t1, grader_t2, grader_t2b,
                                                          grader_t3):
    read(volume)
    to_verification(volume, grader_t1, [grader_t2, grader_t2b], [Diagnosis.CNV, Diagnosis.CNV])
    services.verify_submit(volume=volume, grader=grader_t3, final_label=Diagnosis.CNV)
    scan = ScanFactory()
    services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    for g in (grader_t2, grader_t2b):
        services.grade_submit(scan=scan, grader=g, label=Diagnosis.NORMAL, findings=NO_FINDINGS, confidence=4)
    services.verify_submit(scan=scan, grader=grader_t3, final_label=Diagnosis.NORMAL)
    login(client, grader_t3)
    text = b"".join(client.get(reverse("verification:export_csv")).streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["unit"] for r in rows] == ["scan", "volume"]
    scan_row, volume_row = rows
    assert scan_row["scan_pseudonym"].startswith("S") and scan_row["volume_pseudonym"] == ""
    assert volume_row["volume_pseudonym"].startswith("V") and volume_row["scan_pseudonym"] == ""
    assert volume_row["final_label"] == "CNV" and volume_row["slice_count"] == "5"
    assert volume_row["model_predicted"] == "CNV" and volume_row["key_slices"] == "2+3"
    assert "key_slices=2+3" in volume_row["tier2_grades"]
    data = b"".join(client.get(reverse("verification:export_zip")).streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = list(csv.DictReader(io.StringIO(zf.read("MANIFEST.csv").decode())))
    assert [(m["unit"], m["final_label"], m["slice_index"]) for m in manifest] == [
        ("scan", "NORMAL", ""), ("volume", "CNV", "2"), ("volume", "CNV", "3")]


# --- the data migration -----------------------------------------------------------------------

def test_the_migration_replaces_ungraded_bscan_reviews_by_one_volume_review(db, grader_t1):
    migration = import_module("verification.migrations.0005_volume_review_unit")
    volume = VolumeFactory(slice_count=3)
    Review.objects.filter(volume=volume).delete()
    scans = list(volume.scans.order_by("slice_index"))
    for s in scans:  # as before: one review per B-scan, one of them graded
        Review.objects.create(scan=s, stage="quality_control", required_grades=2)
    Grade.objects.create(scan=scans[1], tier=1, grader=grader_t1, accepted=True)
    migration.open_volume_reviews(apps, None)
    assert Review.objects.filter(volume=volume).count() == 1
    assert list(Review.objects.filter(scan__volume=volume).values_list("scan_id", flat=True)) == [scans[1].pk]
    assert list(selectors.worklist_for(user=grader_t1, tier=1)) == []  # the kept one is not offered


def test_the_examination_report_says_the_eyes_verified_label(volume, clinician, grader_t1, grader_t2, grader_t2b,
                                                             grader_t3):
    before = report_fingerprint(report_data(case=volume.case, user=clinician, with_images=False))
    to_verification(volume, grader_t1, [grader_t2, grader_t2b], [Diagnosis.CNV, Diagnosis.CNV])
    services.verify_submit(volume=volume, grader=grader_t3, final_label=Diagnosis.CNV)
    data = report_data(case=volume.case, user=clinician, with_images=False)
    (eye,) = data.volumes
    assert eye.verified and eye.review.final_label == Diagnosis.CNV
    assert {row.in_volume for row in data.scans} == {volume.pk}
    assert report_fingerprint(data) != before


def test_volume_pages_run_as_many_queries_for_9_bscans_as_for_3(client, grader_t1, clinician):
    # A deferred volume_id once cost one query per B-scan (volume_reading's only()).
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for n in (3, 9):
        volume = VolumeFactory(slice_count=n)
        read(volume)
        pages = [(grader_t1, reverse("verification:grade_volume", args=[volume.pk, 1])),
                 (clinician, reverse("cases:case_detail", args=[volume.case_id]))]
        per_page = []
        for user, url in pages:
            login(client, user).get(url)
            with CaptureQueriesContext(connection) as ctx:
                assert client.get(url).status_code == 200
            per_page.append(len(ctx.captured_queries))
        counts.append(per_page)
    assert counts[0] == counts[1]
