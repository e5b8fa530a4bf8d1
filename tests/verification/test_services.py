"""The verification workflow driven through its services, several graders per tier."""
from __future__ import annotations

import pytest
from auditlog.models import LogEntry

from cases.diagnoses import Diagnosis
from cases.roles import Role
from verification import services
from verification.models import ExclusionReason, Grade, Review, Tier
from octportal.errors import Conflict, DomainError, Forbidden

NO_FINDINGS = {"cnv": False, "macular_edema": False, "drusen": False, "other": False}


def accept(scan, grader):
    return services.quality_submit(scan=scan, grader=grader, accept=True, time_taken=1500)


def grade(scan, grader, label=Diagnosis.CNV, **kw):
    kw.setdefault("findings", {**NO_FINDINGS, "cnv": label == Diagnosis.CNV})
    kw.setdefault("confidence", 4)
    return services.grade_submit(scan=scan, grader=grader, label=label, time_taken=3200, **kw)


def stage(scan):
    return Review.objects.get(scan=scan).stage


def test_agreement_goes_to_verification_then_verified(scan, grader_t1, grader_t2, grader_t2b, grader_t3):
    assert services.review_open(scan=scan).stage == Review.Stage.QUALITY_CONTROL
    accept(scan, grader_t1)
    assert stage(scan) == Review.Stage.GRADING
    grade(scan, grader_t2)
    assert stage(scan) == Review.Stage.GRADING
    grade(scan, grader_t2b)
    assert stage(scan) == Review.Stage.VERIFICATION
    services.verify_submit(scan=scan, grader=grader_t3, final_label=Diagnosis.CNV, note="clear CNV")
    review = Review.objects.get(scan=scan)
    assert review.stage == Review.Stage.VERIFIED
    assert review.final_label == Diagnosis.CNV
    assert review.verified_by == grader_t3
    assert review.verified_at is not None


def test_disagreement_goes_to_arbitration(scan, grader_t1, grader_t2, grader_t2b, grader_t3):
    accept(scan, grader_t1)
    grade(scan, grader_t2, Diagnosis.CNV)
    grade(scan, grader_t2b, Diagnosis.DRUSEN)
    assert stage(scan) == Review.Stage.ARBITRATION
    services.verify_submit(scan=scan, grader=grader_t3, final_label=Diagnosis.DRUSEN)
    assert Review.objects.get(scan=scan).final_label == Diagnosis.DRUSEN


def test_exclusion_leaves_the_flow_with_its_reason(scan, grader_t1, grader_t2):
    services.quality_submit(scan=scan, grader=grader_t1, accept=False, reason=ExclusionReason.SEVERE_ARTIFACT)
    review = Review.objects.get(scan=scan)
    assert review.stage == Review.Stage.EXCLUDED
    assert review.exclusion_reason == ExclusionReason.SEVERE_ARTIFACT
    with pytest.raises(Conflict):
        grade(scan, grader_t2)


def test_exclusion_needs_a_reason(scan, grader_t1):
    with pytest.raises(DomainError, match="why"):
        services.quality_submit(scan=scan, grader=grader_t1, accept=False, reason="")


@pytest.mark.django_db
def test_required_grades_setting_is_honoured(settings, user_factory, grader_t1):
    from tests.factories import ScanFactory

    settings.VERIFICATION_REQUIRED_GRADES = 3
    scan = ScanFactory()
    accept(scan, grader_t1)
    graders = [user_factory(f"g2-{i}", Role.GRADER_T2) for i in range(4)]
    for g in graders[:2]:
        grade(scan, g)
    assert stage(scan) == Review.Stage.GRADING
    grade(scan, graders[2])
    assert stage(scan) == Review.Stage.VERIFICATION
    with pytest.raises(Conflict):
        grade(scan, graders[3])


def test_grader_cannot_grade_same_scan_twice_in_a_tier(scan, grader_t1, grader_t2):
    accept(scan, grader_t1)
    grade(scan, grader_t2)
    with pytest.raises(Conflict, match="already graded"):
        grade(scan, grader_t2, Diagnosis.DME)


def test_grader_cannot_act_in_two_tiers_on_one_scan(scan, user_factory, grader_t2b):
    both = user_factory("both", Role.GRADER_T1, Role.GRADER_T2)
    accept(scan, both)
    with pytest.raises(Forbidden, match="only one tier"):
        grade(scan, both)


def test_role_must_match_tier(scan, grader_t1, grader_t2, grader_t3, clinician, admin):
    with pytest.raises(Forbidden):
        accept(scan, grader_t2)
    with pytest.raises(Forbidden):
        accept(scan, clinician)
    with pytest.raises(Forbidden):
        accept(scan, admin)  # admins act as tier 3 only
    accept(scan, grader_t1)
    with pytest.raises(Forbidden):
        grade(scan, grader_t3)
    with pytest.raises(Forbidden):
        grade(scan, admin)


def test_admin_may_act_as_tier3(scan, grader_t1, grader_t2, grader_t2b, admin):
    accept(scan, grader_t1)
    grade(scan, grader_t2)
    grade(scan, grader_t2b)
    services.verify_submit(scan=scan, grader=admin, final_label=Diagnosis.CNV)
    assert stage(scan) == Review.Stage.VERIFIED


def test_stage_must_match_tier(scan, grader_t1, grader_t2, grader_t3):
    with pytest.raises(Conflict, match="stage"):
        grade(scan, grader_t2)
    with pytest.raises(Conflict, match="stage"):
        services.verify_submit(scan=scan, grader=grader_t3, final_label=Diagnosis.CNV)


def test_correction_supersedes_and_keeps_both(scan, grader_t1, grader_t2, grader_t2b):
    accept(scan, grader_t1)
    first = grade(scan, grader_t2, Diagnosis.CNV)
    grade(scan, grader_t2b, Diagnosis.DME)
    assert stage(scan) == Review.Stage.ARBITRATION
    second = services.grade_correct(
        grade=first, grader=grader_t2, label=Diagnosis.DME, findings=NO_FINDINGS, confidence=3, comment="misread"
    )
    assert second.supersedes == first
    assert Grade.objects.filter(scan=scan, tier=Tier.GRADING, grader=grader_t2).count() == 2
    assert list(Grade.objects.current().filter(scan=scan, grader=grader_t2)) == [second]
    first.refresh_from_db()
    assert first.label == Diagnosis.CNV  # untouched
    assert stage(scan) == Review.Stage.VERIFICATION  # now they agree
    with pytest.raises(Conflict, match="already been corrected"):
        services.grade_correct(grade=first, grader=grader_t2, label=Diagnosis.NORMAL, findings=NO_FINDINGS, confidence=3)


def test_only_own_grades_can_be_corrected(scan, grader_t1, grader_t2, grader_t2b):
    accept(scan, grader_t1)
    g = grade(scan, grader_t2)
    with pytest.raises(Forbidden):
        services.grade_correct(grade=g, grader=grader_t2b, label=Diagnosis.DME, findings=NO_FINDINGS, confidence=3)


def test_tier3_correction_changes_final_label(scan, grader_t1, grader_t2, grader_t2b, grader_t3):
    accept(scan, grader_t1)
    grade(scan, grader_t2)
    grade(scan, grader_t2b)
    g3 = services.verify_submit(scan=scan, grader=grader_t3, final_label=Diagnosis.CNV)
    services.grade_correct(grade=g3, grader=grader_t3, label=Diagnosis.DME, comment="second look")
    assert Review.objects.get(scan=scan).final_label == Diagnosis.DME
    assert Grade.objects.filter(scan=scan, tier=3).count() == 2


def test_tier1_correction_reopens_excluded_scan(scan, grader_t1, grader_t2):
    g1 = services.quality_submit(scan=scan, grader=grader_t1, accept=False, reason=ExclusionReason.OTHER)
    services.grade_correct(grade=g1, grader=grader_t1, accept=True)
    assert stage(scan) == Review.Stage.GRADING
    grade(scan, grader_t2)
    g1b = Grade.objects.current().get(scan=scan, tier=1)
    with pytest.raises(Conflict, match="tier 2 grading has begun"):
        services.grade_correct(grade=g1b, grader=grader_t1, accept=False, reason=ExclusionReason.OTHER)


def test_submitted_grade_cannot_be_edited(scan, grader_t1):
    g = accept(scan, grader_t1)
    g.comment = "changed"
    with pytest.raises(ValueError):
        g.save()


def test_database_refuses_a_second_original_grade(scan, grader_t1):
    from django.db import IntegrityError, transaction

    accept(scan, grader_t1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Grade.objects.bulk_create([Grade(scan=scan, tier=1, grader=grader_t1, accepted=True)])


def test_database_refuses_inconsistent_tier_fields(scan, grader_t2):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Grade.objects.bulk_create([Grade(scan=scan, tier=2, grader=grader_t2, label="", confidence=3)])


def test_grades_and_final_labels_are_audited(scan, grader_t1, grader_t2, grader_t2b, grader_t3):
    accept(scan, grader_t1)
    g = grade(scan, grader_t2)
    grade(scan, grader_t2b)
    services.verify_submit(scan=scan, grader=grader_t3, final_label=Diagnosis.CNV)
    assert LogEntry.objects.get_for_object(g).filter(action=LogEntry.Action.CREATE).count() == 1
    review = Review.objects.get(scan=scan)
    changes = [e.changes_dict for e in LogEntry.objects.get_for_object(review).filter(action=LogEntry.Action.UPDATE)]
    assert any(c.get("final_label") == ["", "CNV"] or c.get("final_label", [None, None])[1] == "CNV" for c in changes)
    assert any("stage" in c for c in changes)
