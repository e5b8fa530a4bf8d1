"""Pages: permission matrix, the grade-and-next flow, blinding, statistics, exports, audit."""
from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.urls import reverse

from cases.diagnoses import Diagnosis
from cases.roles import Role
from verification import services
from verification.exports import patient_pseudonym
from verification.models import Grade, Review
from tests.factories import ScanFactory

from tests.inference.support import make_prediction

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}


def login(client, user):
    client.force_login(user)
    return client


def to_grading(scan, t1):
    services.quality_submit(scan=scan, grader=t1, accept=True)


def to_verification(scan, t1, t2s, labels=None):
    to_grading(scan, t1)
    for i, g in enumerate(t2s):
        label = (labels or [Diagnosis.CNV] * len(t2s))[i]
        services.grade_submit(scan=scan, grader=g, label=label, findings=NO_FINDINGS, confidence=4)


def verified(scan, t1, t2s, t3, label=Diagnosis.CNV):
    to_verification(scan, t1, t2s, [label] * len(t2s))
    services.verify_submit(scan=scan, grader=t3, final_label=label)


# --- permission matrix ------------------------------------------------------------------

@pytest.fixture
def users(clinician, grader_t1, grader_t2, grader_t3, admin, no_role_user):
    return {
        "clinician": clinician, "t1": grader_t1, "t2": grader_t2, "t3": grader_t3, "admin": admin,
        "norole": no_role_user,
    }


PAGES = [
    # (url name, args builder, users allowed)
    ("verification:worklist", lambda s: [1], {"t1"}),
    ("verification:worklist", lambda s: [2], {"t2"}),
    ("verification:worklist", lambda s: [3], {"t3", "admin"}),
    ("verification:grade", lambda s: [s.pk, 1], {"t1"}),
    ("verification:grade", lambda s: [s.pk, 2], {"t2"}),
    ("verification:grade", lambda s: [s.pk, 3], {"t3", "admin"}),
    ("verification:statistics", lambda s: [], {"t3", "admin"}),
    ("verification:export_csv", lambda s: [], {"t3", "admin"}),
    ("verification:export_zip", lambda s: [], {"t3", "admin"}),
    ("verification:scan_audit", lambda s: [s.pk], {"admin"}),
]


@pytest.mark.parametrize("name,args,allowed", PAGES)
def test_permission_matrix_for_every_page(client, users, scan, name, args, allowed):
    url = reverse(name, args=args(scan))
    response = client.get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"], "anonymous goes to sign-in"
    for key, user in users.items():
        client.force_login(user)
        response = client.get(url)
        expected = 200 if key in allowed else 403
        assert response.status_code == expected, f"{key} on {url}: {response.status_code}"
        if expected == 200 and hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        client.logout()


def test_worklist_next_redirects_to_first_scan(client, grader_t1):
    scan = ScanFactory()
    r = login(client, grader_t1).get(reverse("verification:worklist_next", args=[1]))
    assert r["Location"] == reverse("verification:grade", args=[scan.pk, 1])


# --- flow through the pages -----------------------------------------------------------

def test_grade_and_next_flow_through_pages(client, grader_t1, grader_t2, grader_t2b, grader_t3):
    first, second = ScanFactory(), ScanFactory()
    login(client, grader_t1)
    r = client.post(reverse("verification:grade", args=[first.pk, 1]), {"decision": "accept", "time_taken_ms": "1800", "then": "next"})
    assert r["Location"] == reverse("verification:grade", args=[second.pk, 1])
    r = client.post(reverse("verification:grade", args=[second.pk, 1]), {"decision": "exclude", "reason": "low_resolution"})
    assert r["Location"] == reverse("verification:worklist", args=[1])
    assert Review.objects.get(scan=second).stage == Review.Stage.EXCLUDED
    assert Grade.objects.get(scan=first, tier=1).time_taken_ms == 1800

    for g, label in ((grader_t2, "DME"), (grader_t2b, "CNV")):
        login(client, g)
        r = client.post(
            reverse("verification:grade", args=[first.pk, 2]),
            {"label": label, "cnv": "on", "confidence": "4", "time_taken_ms": "4000"},
        )
        assert r.status_code == 302
    assert Review.objects.get(scan=first).stage == Review.Stage.ARBITRATION
    login(client, grader_t3)
    page = client.get(reverse("verification:worklist", args=[3]))
    assert f"#{first.pk}" in page.content.decode()
    client.post(reverse("verification:grade", args=[first.pk, 3]), {"label": "DME", "comment": "edema"})
    review = Review.objects.get(scan=first)
    assert review.stage == Review.Stage.VERIFIED and review.final_label == "DME"


def test_domain_error_is_shown_as_a_clear_page(client, grader_t2, scan):
    r = login(client, grader_t2).post(reverse("verification:grade", args=[scan.pk, 2]), {"label": "CNV", "confidence": "3"})
    assert r.status_code == 409
    assert "cannot grade it now" in r.content.decode()


def test_correction_page_supersedes(client, grader_t1, grader_t2, scan):
    to_grading(scan, grader_t1)
    g = services.grade_submit(scan=scan, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=3)
    login(client, grader_t2)
    page = client.get(reverse("verification:grade", args=[scan.pk, 2]))
    assert reverse("verification:grade_correct", args=[g.pk]) in page.content.decode()
    r = client.post(reverse("verification:grade_correct", args=[g.pk]), {"label": "DRUSEN", "drusen": "on", "confidence": "5"})
    assert r.status_code == 302
    current = Grade.objects.current().get(scan=scan, grader=grader_t2)
    assert current.label == "DRUSEN" and current.supersedes == g


def test_other_graders_grade_cannot_be_corrected_via_page(client, grader_t1, grader_t2, grader_t2b, scan):
    to_grading(scan, grader_t1)
    g = services.grade_submit(scan=scan, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=3)
    assert login(client, grader_t2b).get(reverse("verification:grade_correct", args=[g.pk])).status_code == 404


# --- worklists --------------------------------------------------------------------------

def test_worklist_puts_model_urgent_first_then_oldest(grader_t1):
    from verification.selectors import worklist_for

    old, newer, urgent = ScanFactory(), ScanFactory(), ScanFactory()
    make_prediction(urgent, predicted=Diagnosis.CNV)
    make_prediction(old, predicted=Diagnosis.NORMAL)
    assert list(worklist_for(user=grader_t1, tier=1)) == [urgent, old, newer]


def test_worklist_excludes_acted_on_and_full_scans(user_factory, grader_t1, grader_t2, grader_t2b, grader_t2c):
    from verification.selectors import worklist_for

    a, b = ScanFactory(), ScanFactory()
    to_grading(a, grader_t1)
    to_grading(b, grader_t1)
    assert worklist_for(user=grader_t1, tier=1).count() == 0
    services.grade_submit(scan=a, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=3)
    assert list(worklist_for(user=grader_t2, tier=2)) == [b]
    assert list(worklist_for(user=grader_t2b, tier=2)) == [a, b]
    services.grade_submit(scan=a, grader=grader_t2b, label="CNV", findings=NO_FINDINGS, confidence=3)
    assert list(worklist_for(user=grader_t2c, tier=2)) == [b]  # a has its 2 grades


# --- blinding -----------------------------------------------------------------------------

def test_grader_cannot_see_other_grades_before_submitting(client, grader_t1, grader_t2, grader_t2b, grader_t3, scan):
    to_grading(scan, grader_t1)
    services.grade_submit(scan=scan, grader=grader_t2, label="DRUSEN", findings=NO_FINDINGS, confidence=2, comment="secret-remark")
    login(client, grader_t2b)
    page = client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    assert "secret-remark" not in page and "<td>grader2</td>" not in page
    from verification.blinding import grades_visible as grades_visible_to

    assert [g.tier for g in grades_visible_to(user=grader_t2b, scan=scan)] == [1]
    services.grade_submit(scan=scan, grader=grader_t2b, label="CNV", findings=NO_FINDINGS, confidence=2)
    page = client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    assert "secret-remark" in page
    login(client, grader_t3)
    assert "secret-remark" in client.get(reverse("verification:grade", args=[scan.pk, 3])).content.decode()


def test_reading_centre_mode_hides_reference_until_own_grade(settings, client, grader_t1, grader_t2, grader_t3, clinician):
    from verification.blinding import may_see_reading as may_see_reference

    scan = ScanFactory(source_label=Diagnosis.DME, source_label_origin="kermany folder")
    make_prediction(scan, predicted=Diagnosis.CNV)
    to_grading(scan, grader_t1)
    settings.VERIFICATION_READING_CENTRE_MODE = False
    assert may_see_reference(user=grader_t2, scan=scan)
    settings.VERIFICATION_READING_CENTRE_MODE = True
    assert not may_see_reference(user=grader_t2, scan=scan)
    for u in (grader_t1, grader_t3, clinician):
        assert may_see_reference(user=u, scan=scan)
    login(client, grader_t2)
    page = client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    assert "kermany folder" not in page and "octnet-test" not in page and 'data-reference=""' in page
    client.post(reverse("verification:grade", args=[scan.pk, 2]), {"label": "DME", "confidence": "4"})
    assert Grade.objects.get(scan=scan, tier=2).reference_label == ""
    assert may_see_reference(user=grader_t2, scan=scan)


def test_reference_is_source_label_else_model(grader_t1):
    from verification.selectors import reference_for

    labelled = ScanFactory(source_label=Diagnosis.NORMAL)
    make_prediction(labelled, predicted=Diagnosis.CNV)
    assert reference_for(scan=labelled).label == "NORMAL" and reference_for(scan=labelled).origin == "source"
    unlabelled = ScanFactory()
    make_prediction(unlabelled, predicted=Diagnosis.CNV)
    assert reference_for(scan=unlabelled).label == "CNV" and reference_for(scan=unlabelled).origin == "model"
    rejected = ScanFactory()
    make_prediction(rejected, predicted=Diagnosis.CNV, gate_passed=False)
    assert reference_for(scan=rejected).label == ""


def test_confirming_records_the_reference_shown(client, grader_t1, grader_t2, settings):
    settings.VERIFICATION_READING_CENTRE_MODE = False  # "confirm or correct"
    scan = ScanFactory(source_label=Diagnosis.DRUSEN)
    to_grading(scan, grader_t1)
    login(client, grader_t2)
    assert 'data-reference="DRUSEN"' in client.get(reverse("verification:grade", args=[scan.pk, 2])).content.decode()
    client.post(reverse("verification:grade", args=[scan.pk, 2]), {"label": "DRUSEN", "drusen": "on", "confidence": "4"})
    assert Grade.objects.get(scan=scan, tier=2).reference_label == "DRUSEN"


def test_scan_panel_tag_blinds_tier2(rf, grader_t1, grader_t2, grader_t2b, grader_t3, scan):
    from django.template import Context, Template

    to_grading(scan, grader_t1)
    services.grade_submit(scan=scan, grader=grader_t2, label="DRUSEN", findings=NO_FINDINGS, confidence=2, comment="hidden-note")
    tpl = Template('{% include "verification/_scan_panel.html" %}')

    def render(user):
        request = rf.get("/")
        request.user = user
        return tpl.render(Context({"request": request, "scan": scan}))

    assert "hidden-note" not in render(grader_t2b)
    assert "hidden-note" in render(grader_t3)
    assert "Independent grading" in render(grader_t2b)


# --- statistics and exports -------------------------------------------------------------------

def test_statistics_page_shows_kappa_and_confusion_matrix(client, grader_t1, grader_t2, grader_t2b, grader_t3):
    scans = [ScanFactory() for _ in range(3)]
    for s, (a, b), truth, model in zip(scans, [("CNV", "CNV"), ("DME", "DME"), ("NORMAL", "DRUSEN")], ["CNV", "DME", "NORMAL"], ["CNV", "CNV", "NORMAL"]):
        to_verification(s, grader_t1, [grader_t2, grader_t2b], [a, b])
        services.verify_submit(scan=s, grader=grader_t3, final_label=truth)
        make_prediction(s, predicted=model)
    page = login(client, grader_t3).get(reverse("verification:statistics")).content.decode()
    assert "Fleiss" in page and "vf-heatmap" in page
    assert "accuracy <strong>66.7%</strong>" in page


def test_csv_export_has_final_labels_grades_and_model(client, grader_t1, grader_t2, grader_t2b, grader_t3):
    scan = ScanFactory()
    verified(scan, grader_t1, [grader_t2, grader_t2b], grader_t3, Diagnosis.DME)
    make_prediction(scan, predicted=Diagnosis.DME)
    ScanFactory()  # not verified: not exported
    r = login(client, grader_t3).get(reverse("verification:export_csv"))
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == 1
    row = rows[0]
    assert row["final_label"] == "DME" and row["model_predicted"] == "DME"
    assert grader_t2.username in row["tier2_grades"] and grader_t2b.username in row["tier2_grades"]
    assert row["patient_pseudonym"] == patient_pseudonym(scan.case.patient.identifier)
    assert scan.case.patient.identifier not in b"".join(login(client, grader_t3).get(reverse("verification:export_csv")).streaming_content).decode()


def test_export_blinding_is_enforced_by_selector(grader_t1, grader_t2, grader_t2b, grader_t3):
    from verification.exports import verified_csv_rows

    scan = ScanFactory()
    verified(scan, grader_t1, [grader_t2, grader_t2b], grader_t3)
    # A blinded user (tier 2 who never graded it) gets no other tier 2 grades even if an
    # export were opened to them; the pages restrict exports to tier 3/admin anyway.
    from cases.roles import Role as R
    from tests.conftest import make_user

    outsider = make_user("outsider", R.GRADER_T2)
    text = "".join(verified_csv_rows(user=outsider))
    assert f"{grader_t2.username}:" not in text and f"{grader_t2b.username}:" not in text
    assert f"{grader_t3.username}:" not in text
    assert f"{grader_t1.username}:accepted" in text  # tier 1 stays visible


def test_zip_export_uses_reference_layout_and_pseudonyms(client, grader_t1, grader_t2, grader_t2b, grader_t3):
    a, b = ScanFactory(), ScanFactory()
    verified(a, grader_t1, [grader_t2, grader_t2b], grader_t3, Diagnosis.CNV)
    verified(b, grader_t1, [grader_t2, grader_t2b], grader_t3, Diagnosis.NORMAL)
    r = login(client, grader_t3).get(reverse("verification:export_zip"))
    assert r["Content-Type"] == "application/zip"
    data = b"".join(r.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pa = patient_pseudonym(a.case.patient.identifier)
        assert f"CNV/CNV-{pa}-1.png" in names
        assert any(n.startswith("NORMAL/NORMAL-") for n in names)
        assert "MANIFEST.csv" in names
        assert zf.read(f"CNV/CNV-{pa}-1.png") == a.original.open("rb").read()
        assert all(a.case.patient.identifier not in n for n in names)


# --- audit --------------------------------------------------------------------------------------

def test_audit_page_lists_grade_and_final_label_changes(client, grader_t1, grader_t2, grader_t2b, grader_t3, admin):
    scan = ScanFactory()
    login(client, grader_t1).post(reverse("verification:grade", args=[scan.pk, 1]), {"decision": "accept"})
    services.grade_submit(scan=scan, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=4)
    services.grade_submit(scan=scan, grader=grader_t2b, label="CNV", findings=NO_FINDINGS, confidence=4)
    services.verify_submit(scan=scan, grader=grader_t3, final_label="CNV")
    page = login(client, admin).get(reverse("verification:scan_audit", args=[scan.pk])).content.decode()
    assert "Grade #" in page and "Final label set to Choroidal neovascularization (CNV)" in page
    assert grader_t1.username in page  # the actor recorded by AuditlogMiddleware
    # Readable: users by name, field names in words, no storage paths nor raw ids.
    assert f"Grader set to {grader_t2.username}" in page and "Verified by set to grader3" in page
    assert "final_label" not in page and "grader: None" not in page
    assert "scans/original/" not in page and "scans/image/" not in page


def test_audit_rows_humanise_storage_paths_choices_and_users(grader_t1, admin):
    from auditlog.models import LogEntry

    from verification.audit import audit_rows

    scan = ScanFactory()
    entries = list(LogEntry.objects.filter(object_pk__in=[str(scan.pk)]).select_related("actor", "content_type"))
    scan_rows = [r for r in audit_rows(entries) if r.subject.startswith("Scan")]
    text = " ".join(c for r in scan_rows for c in r.changes)
    assert "Original stored" in text and "Image stored" in text
    assert "scans/" not in text and "Original name changed from [redacted] to [redacted]" in text
    assert scan.original_name not in text  # file names are masked in the audit (cases.audit)


def test_reference_visible_ids_matches_the_single_scan_rule(settings, grader_t1, grader_t2, clinician):
    from verification.blinding import may_see_reading as may_see_reference, reading_visible_ids as reference_visible_ids

    settings.VERIFICATION_READING_CENTRE_MODE = True
    a, b = ScanFactory(), ScanFactory()
    for s in (a, b):
        to_grading(s, grader_t1)
    services.grade_submit(scan=a, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=3)
    assert reference_visible_ids(user=grader_t2, scan_ids=[a.pk, b.pk]) == {a.pk}
    assert {s.pk for s in (a, b) if may_see_reference(user=grader_t2, scan=s)} == {a.pk}
    assert reference_visible_ids(user=clinician, scan_ids=[a.pk, b.pk]) == {a.pk, b.pk}


@pytest.mark.parametrize("tier,allowed", [(1, {"t1"}), (2, {"t2"}), (3, {"t3", "admin"})])
def test_worklist_next_permission_matrix(client, users, tier, allowed):
    url = reverse("verification:worklist_next", args=[tier])
    assert "/accounts/login/" in client.get(url)["Location"]
    for key, user in users.items():
        client.force_login(user)
        status = client.get(url).status_code
        assert (status == 302) if key in allowed else (status == 403), f"{key}: {status}"


def test_correct_page_permission_matrix(client, users, grader_t1, scan):
    g = services.quality_submit(scan=scan, grader=grader_t1, accept=True)
    url = reverse("verification:grade_correct", args=[g.pk])
    assert "/accounts/login/" in client.get(url)["Location"]
    for key, user in users.items():
        client.force_login(user)
        assert client.get(url).status_code == (200 if key == "t1" else 404), key


def test_senior_who_also_grades_tier2_is_blinded_while_scan_is_open(settings, user_factory, grader_t1, grader_t2, grader_t2b):
    from verification.blinding import grades_visible as grades_visible_to, may_see_reading as may_see_reference, reading_visible_ids as reference_visible_ids

    settings.VERIFICATION_READING_CENTRE_MODE = True
    both = user_factory("senior-and-grader", Role.GRADER_T2, Role.GRADER_T3)
    scan = ScanFactory(source_label="CNV")
    to_grading(scan, grader_t1)
    services.grade_submit(scan=scan, grader=grader_t2, label="CNV", findings=NO_FINDINGS, confidence=3)
    assert [g.tier for g in grades_visible_to(user=both, scan=scan)] == [1]
    assert not may_see_reference(user=both, scan=scan)
    assert reference_visible_ids(user=both, scan_ids=[scan.pk]) == set()
    services.grade_submit(scan=scan, grader=grader_t2b, label="CNV", findings=NO_FINDINGS, confidence=3)
    # Slots full: they can only verify now, and tier 3 sees everything.
    assert sorted(g.tier for g in grades_visible_to(user=both, scan=scan)) == [1, 2, 2]
    assert may_see_reference(user=both, scan=scan)
    assert reference_visible_ids(user=both, scan_ids=[scan.pk]) == {scan.pk}


def test_statistics_page_names_exclusion_reasons_and_stages(client, grader_t1, grader_t3):
    scan = ScanFactory()
    services.quality_submit(scan=scan, grader=grader_t1, accept=False, reason="not_macular_bscan")
    page = login(client, grader_t3).get(reverse("verification:statistics")).content.decode()
    assert "Not a B-scan of the macula" in page and "Excluded 1" in page and "1 of 1 scans excluded" in page


def test_statistics_counted_by_the_database_equal_the_counts_of_the_rows(grader_t1, grader_t2, grader_t2b, grader_t3):
    """selectors.statistics_aggregates (SQL GROUP BY) against statistics.aggregate_rows (Python)."""
    from cases.models import Scan
    from inference.selectors import predictions_current_by_scan
    from verification import statistics as st
    from verification.selectors import statistics_aggregates

    labels = list(Diagnosis.values)
    scans = [ScanFactory(source_label=Diagnosis.CNV) for _ in range(4)]
    to_verification(scans[0], grader_t1, [grader_t2, grader_t2b], [Diagnosis.CNV, Diagnosis.CNV])
    services.verify_submit(scan=scans[0], grader=grader_t3, final_label=Diagnosis.CNV)
    to_verification(scans[1], grader_t1, [grader_t2, grader_t2b], [Diagnosis.DME, Diagnosis.NORMAL])
    services.verify_submit(scan=scans[1], grader=grader_t3, final_label=Diagnosis.DME)
    to_grading(scans[2], grader_t1)
    g = services.grade_submit(scan=scans[2], grader=grader_t2, label=Diagnosis.DRUSEN, findings=NO_FINDINGS, confidence=3)
    services.grade_correct(grade=g, grader=grader_t2, label=Diagnosis.NORMAL, findings=NO_FINDINGS, confidence=4)
    services.quality_submit(scan=scans[3], grader=grader_t1, accept=False, reason="severe_artifact")
    for s, label in zip(scans, [Diagnosis.CNV, Diagnosis.CNV, Diagnosis.NORMAL, Diagnosis.DME]):
        make_prediction(s, predicted=label)
    current = Grade.objects.current().select_related("grader")
    rows = [
        {"scan_id": x.scan_id, "tier": x.tier, "grader_id": x.grader_id, "grader__username": x.grader.username,
         "label": x.label, "accepted": x.accepted, "exclusion_reason": x.exclusion_reason,
         "time_taken_ms": x.time_taken_ms}
        for x in current
    ]
    reviews = list(Review.objects.values("scan_id", "stage", "final_label"))
    predictions = {k: p.predicted for k, p in predictions_current_by_scan(scan_ids=[s.pk for s in scans]).items()}
    sources = dict(Scan.objects.exclude(source_label="").values_list("id", "source_label"))
    expected = st.aggregate_rows(grades=rows, reviews=reviews, sources=sources, predictions=predictions, labels=labels)
    counted = statistics_aggregates(labels=labels)
    for name in ("names", "pair_tables", "patterns", "grader_final", "model_final", "model_source", "qc", "times",
                 "time_sums", "stages"):
        got, want = getattr(counted, name), getattr(expected, name)
        assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}, name
    assert st.build_report(counted) == st.build_report(expected)


def test_statistics_page_serves_a_cached_report_and_recomputes_on_request(client, grader_t1, grader_t2, grader_t2b, grader_t3):
    from django.core.cache import cache

    from verification.selectors import STATISTICS_CACHE_KEY
    from verification.tasks import refresh_statistics

    cache.delete(STATISTICS_CACHE_KEY)
    login(client, grader_t3)
    first = client.get(reverse("verification:statistics")).context["computed_at"]
    assert client.get(reverse("verification:statistics")).context["computed_at"] == first  # from the cache
    scan = ScanFactory()
    to_grading(scan, grader_t1)
    assert client.get(reverse("verification:statistics")).context["report"].qc_total == 0  # still the snapshot
    page = client.get(reverse("verification:statistics") + "?fresh=1")
    assert page.context["report"].qc_total == 1 and page.context["computed_at"] > first
    assert refresh_statistics.apply().successful()
