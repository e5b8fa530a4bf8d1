"""Issue 14 (remaining parts): one B-scan viewer on every page that shows a B-scan, with the
heatmap only for those the blinding rule lets see the reading; the reference gallery of
verified examples on the learn pages and in the viewer (signed-in users only, bounded)."""
from __future__ import annotations

import pytest
from django.urls import reverse

from cases.roles import Role
from tests.clinic.conftest import read_scan, verify
from tests.factories import ScanFactory, VolumeFactory, review_update
from tests.inference.support import make_prediction, png_bytes
from verification import selectors
from verification.models import Grade, Review, Tier

pytestmark = pytest.mark.django_db


def t2_grade(scan, grader, label: str) -> Grade:
    return Grade.objects.create(
        scan=scan, tier=Tier.GRADING, grader=grader, label=label, confidence=4,
        finding_cnv=label == "CNV", finding_macular_edema=label == "DME", finding_drusen=label == "DRUSEN",
        finding_other=False,
    )


def heatmap_scan(predicted: str = "CNV"):
    scan = ScanFactory(status="analysed")
    make_prediction(scan, None, predicted, confidence=0.9, heatmap=png_bytes(64, 48, "RGBA"))
    return scan


# --- the viewer ------------------------------------------------------------------------------


def test_scan_page_viewer_has_heatmap_opacity_legend_and_shortcuts(client, clinician):
    scan = heatmap_scan()
    client.force_login(clinician)
    html = client.get(scan.get_absolute_url()).content.decode()
    assert html.count("data-viewer ") + html.count("data-viewer>") >= 1
    assert f'data-overlay-src="{reverse("inference:heatmap", args=[scan.pk])}"' in html
    assert "data-viewer-opacity" in html and "data-viewer-legend" in html
    assert "Keyboard shortcuts" in html and "data-viewer-help" in html


@pytest.mark.parametrize("tier,who", [(1, "grader_t1"), (3, "grader_t3")])
def test_grading_pages_use_the_viewer_with_the_heatmap(client, request, tier, who):
    scan = heatmap_scan()
    client.force_login(request.getfixturevalue(who))
    html = client.get(reverse("verification:grade", args=[scan.pk, tier])).content.decode()
    assert "data-viewer-stage" in html and "js/viewer.js" in html
    assert reverse("inference:heatmap", args=[scan.pk]) in html
    assert "data-viewer-overlay-control" in html and "data-viewer-opacity" in html


def test_blinded_tier2_grader_gets_the_viewer_without_any_heatmap(client, grader_t2, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    scan = heatmap_scan()
    review_update(scans=scan, stage=Review.Stage.GRADING)
    client.force_login(grader_t2)
    html = client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    assert "data-viewer-stage" in html
    assert "data-viewer-no-heatmap" in html
    assert "data-viewer-overlay-control" not in html and "data-viewer-opacity" not in html
    assert reverse("inference:heatmap", args=[scan.pk]) not in html
    assert "heatmap.png" not in html
    assert scan.original_name not in html  # graders see the neutral code


def test_tier2_grader_sees_the_heatmap_once_they_have_graded(client, grader_t2, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    scan = heatmap_scan()
    review_update(scans=scan, stage=Review.Stage.GRADING)
    t2_grade(scan, grader_t2, "CNV")
    client.force_login(grader_t2)
    html = client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    assert reverse("inference:heatmap", args=[scan.pk]) in html


# --- the reference gallery -------------------------------------------------------------------


@pytest.fixture
def verified_examples(grader_t3, user_factory):
    """CNV: three verified scans with 2, 1 and 0 agreeing tier 2 grades; DME: one; one CNV
    scan still in grading (never an example)."""
    g_a = user_factory("t2a", Role.GRADER_T2)
    g_b = user_factory("t2b", Role.GRADER_T2)
    out = {}
    for name, agreeing in (("best", 2), ("middle", 1), ("none", 0)):
        scan = read_scan("CNV")
        for grader in (g_a, g_b)[:agreeing]:
            t2_grade(scan, grader, "CNV")
        if agreeing == 0:
            t2_grade(scan, g_a, "DME")
        verify(scan, "CNV", grader_t3)
        out[name] = scan
    out["dme"] = read_scan("DME")
    verify(out["dme"], "DME", grader_t3)
    out["open"] = read_scan("CNV")
    out["g_a"] = g_a
    return out


def test_reference_examples_rank_by_agreement_and_bound_per_class(verified_examples, clinician, django_assert_max_num_queries):
    # The caller's roles, two bounded candidate queries per class (scans' and volumes'
    # reviews apart), one ranking query: at any number of verified scans.
    with django_assert_max_num_queries(1 + 2 * len(selectors.Diagnosis.values) + 1):
        refs = selectors.reference_examples(user=clinician, per_class=2)
    cnv = [r.scan_id for r in refs["CNV"]]
    assert cnv == [verified_examples["best"].pk, verified_examples["middle"].pk]
    assert refs["CNV"][0].agreement == 2 and refs["CNV"][0].grades_t2 == 2
    assert [r.scan_id for r in refs["DME"]] == [verified_examples["dme"].pk]
    assert refs["NORMAL"] == [] and refs["DRUSEN"] == []


def test_reference_examples_obey_blinding_for_tier2(verified_examples, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    refs = selectors.reference_examples(user=verified_examples["g_a"])
    # Grader A graded "best", "middle" and "none" but never the DME scan.
    assert {r.scan_id for r in refs["CNV"]} == {verified_examples[k].pk for k in ("best", "middle", "none")}
    assert refs["DME"] == []


def test_learn_page_shows_examples_to_signed_in_staff_only(client, verified_examples, clinician, no_role_user):
    url = reverse("cases:learn", args=["cnv"])
    anonymous = client.get(url).content.decode()
    assert "data-reference-gallery" not in anonymous and "/thumbnail/" not in anonymous
    assert "Choroidal" in anonymous  # the text is still there
    client.force_login(no_role_user)
    assert "/thumbnail/" not in client.get(url).content.decode()
    client.force_login(clinician)
    html = client.get(url).content.decode()
    assert 'data-reference-gallery="CNV"' in html
    assert html.index(f'data-reference-scan="{verified_examples["best"].pk}"') < html.index(
        f'data-reference-scan="{verified_examples["middle"].pk}"'
    )
    assert f'data-reference-scan="{verified_examples["open"].pk}"' not in html
    assert f'data-reference-scan="{verified_examples["dme"].pk}"' not in html


def test_learn_page_queries_are_bounded(client, verified_examples, clinician, django_assert_max_num_queries):
    client.force_login(clinician)
    with django_assert_max_num_queries(12):  # 2 per class: scans and volumes apart
        assert client.get(reverse("cases:learn", args=["cnv"])).status_code == 200


def test_viewer_offers_side_by_side_comparison_without_the_scan_itself(client, verified_examples, clinician):
    client.force_login(clinician)
    scan = verified_examples["best"]
    html = client.get(scan.get_absolute_url()).content.decode()
    assert "data-viewer-refs" in html and "data-viewer-compare" in html
    assert f'data-compare-src="{reverse("cases:scan_image", args=[verified_examples["middle"].pk])}"' in html
    assert f'data-compare-src="{reverse("cases:scan_image", args=[scan.pk])}"' not in html


def test_scan_page_queries_do_not_grow_with_the_gallery(client, verified_examples, clinician, django_assert_max_num_queries):
    client.force_login(clinician)
    scan = verified_examples["open"]
    with django_assert_max_num_queries(30):
        assert client.get(scan.get_absolute_url()).status_code == 200


# --- reference examples chosen by a tier 3 grader ------------------------------------------


def test_a_tier3_pick_comes_before_agreement(client, verified_examples, clinician, grader_t3):
    from verification import services

    picked = verified_examples["none"]
    client.force_login(grader_t3)
    html = client.get(reverse("verification:grade", args=[picked.pk, 3])).content.decode()
    assert "Use as a reference example of CNV" in html
    response = client.post(reverse("verification:reference_pick", args=[picked.pk]), {"picked": "1"})
    assert response.status_code == 302
    assert Review.objects.get(scan=picked).reference_pick
    refs = selectors.reference_examples(user=clinician, per_class=2)
    assert [r.scan_id for r in refs["CNV"]] == [picked.pk, verified_examples["best"].pk]
    services.reference_pick_set(scan=picked, user=grader_t3, picked=False)
    assert selectors.reference_examples(user=clinician, per_class=1)["CNV"][0].scan_id == verified_examples["best"].pk


def test_only_tier3_picks_and_only_verified_scans(client, verified_examples, grader_t2, grader_t3):
    from octportal.errors import Conflict
    from verification import services

    client.force_login(grader_t2)
    assert client.post(reverse("verification:reference_pick", args=[verified_examples["best"].pk]), {"picked": "1"}).status_code == 403
    with pytest.raises(Conflict):
        services.reference_pick_set(scan=verified_examples["open"], user=grader_t3, picked=True)
    assert not Review.objects.filter(reference_pick=True).exists()


# --- verified volumes (one eye) in the gallery: their key B-scan ------------------------------

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}


def verify_volume(volume, t1, t2s, t3, *, label="CNV", keys=((3, 1), (1, 4))):
    from verification import services

    services.quality_submit(volume=volume, grader=t1, accept=True)
    for grader, key in zip(t2s, keys):
        services.grade_submit(volume=volume, grader=grader, label=label, findings=NO_FINDINGS, confidence=4,
                              key_slices=list(key))
    services.verify_submit(volume=volume, grader=t3, final_label=label)
    return volume


@pytest.fixture
def verified_eyes(grader_t1, grader_t2, grader_t2b, grader_t3):
    """A CNV eye whose tier 2 graders both marked B-scan 1 (and one each 3 and 4), a CNV eye
    with no key B-scan marked, and a verified CNV single scan with one agreeing grade."""
    keyed = verify_volume(VolumeFactory(slice_count=5), grader_t1, [grader_t2, grader_t2b], grader_t3)
    unkeyed = verify_volume(VolumeFactory(slice_count=5), grader_t1, [grader_t2, grader_t2b], grader_t3,
                            keys=((), ()))
    single = read_scan("CNV")
    t2_grade(single, grader_t2b, "CNV")
    verify(single, "CNV", grader_t3)
    return {"keyed": keyed, "unkeyed": unkeyed, "single": single, "key": keyed.scans.get(slice_index=1)}


def test_a_verified_eye_is_an_example_by_its_most_marked_key_bscan(verified_eyes, clinician,
                                                                    django_assert_max_num_queries):
    # As for scans, plus two queries for the volumes' key B-scans.
    with django_assert_max_num_queries(1 + 2 * len(selectors.Diagnosis.values) + 1 + 2):
        refs = selectors.reference_examples(user=clinician)
    [eye, single] = refs["CNV"]  # the eye first: two of two tier 2 grades agree, the scan one of one
    assert (eye.volume_id, eye.example, eye.agreement, eye.grades_t2) == (
        verified_eyes["keyed"].pk, verified_eyes["key"], 2, 2)
    assert (single.scan_id, single.example, single.agreement) == (verified_eyes["single"].pk, verified_eyes["single"], 1)
    # The eye with no key B-scan is no example: its label is not every B-scan's.
    assert verified_eyes["unkeyed"].pk not in {r.volume_id for r in refs["CNV"]}


def test_learn_page_and_viewer_show_the_eye_by_its_key_bscan_but_not_beside_its_own_bscans(
    client, verified_eyes, clinician, django_assert_max_num_queries
):
    client.force_login(clinician)
    key = verified_eyes["key"]
    with django_assert_max_num_queries(14):  # 2 per class: scans and volumes apart
        html = client.get(reverse("cases:learn", args=["cnv"])).content.decode()
    assert f'data-reference-scan="{key.pk}" data-reference-volume="{verified_eyes["keyed"].pk}"' in html
    assert reverse("cases:scan_thumbnail", args=[key.pk]) in html and "key B-scan 2 of 5" in html
    html = client.get(verified_eyes["single"].get_absolute_url()).content.decode()
    assert f'data-compare-src="{reverse("cases:scan_image", args=[key.pk])}"' in html
    own = verified_eyes["keyed"].scans.get(slice_index=0)
    html = client.get(own.get_absolute_url()).content.decode()
    assert f'data-compare-src="{reverse("cases:scan_image", args=[key.pk])}"' not in html


def test_a_blinded_tier2_grader_sees_an_eye_example_only_once_they_graded_it(
    verified_eyes, settings, user_factory, grader_t1, grader_t2, grader_t3
):
    settings.VERIFICATION_READING_CENTRE_MODE = True
    other = user_factory("t2-other", Role.GRADER_T2)
    both = user_factory("t2-and-t3", Role.GRADER_T2, Role.GRADER_T3)
    assert verified_eyes["keyed"].pk in {r.volume_id for r in selectors.reference_examples(user=grader_t2)["CNV"]}
    assert not any(r.volume_id for r in selectors.reference_examples(user=other)["CNV"])
    # Tier 2 and 3 at once: a verified eye is past tier 2, so it is visible.
    assert verified_eyes["keyed"].pk in {r.volume_id for r in selectors.reference_examples(user=both)["CNV"]}
    assert selectors.reference_examples(user=other)["CNV"] == []  # nor the single scan it never graded
