"""Tiered expert verification: one Grade per grader decision, one Review per review unit.

A review unit is a single B-scan (an image uploaded on its own, or the one B-scan of a
volume of one) or a whole volume of more than one B-scan (:func:`review_unit_of`):
tier 1 accepts or excludes the volume, tier 2 grades the eye, tier 3 verifies it.
Grades and reviews point at exactly one of ``scan`` or ``volume``.

Grades are append-only. A correction is a new grade whose ``supersedes`` points at
the grade it corrects; ``supersedes`` is one-to-one, so every correction chain is
linear and its last link is the grader's *current* grade. Together with the
partial unique constraint on originals (``supersedes IS NULL``) the database
guarantees one current grade per (scan, tier, grader) without ever updating a
submitted row.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.urls import reverse

from cases.diagnoses import Diagnosis
from cases.models import Scan, Volume


class Unit(models.TextChoices):
    """What a review counts: one B-scan, or one volume (one eye's acquisition)."""

    SCAN = "scan", "B-scan"
    VOLUME = "volume", "Volume"


def is_volume_unit(volume: Volume | None) -> bool:
    """Whether ``volume`` is reviewed as one unit: a volume of more than one B-scan.
    A volume of one is reviewed as its B-scan, like an image uploaded on its own."""
    return volume is not None and volume.slice_count > 1


def review_unit_of(scan: Scan) -> Scan | Volume:
    """The unit ``scan`` is reviewed in: its volume when that has more than one B-scan, else itself."""
    volume = scan.volume if scan.volume_id else None
    return volume if is_volume_unit(volume) else scan


def unit_kind(unit: Scan | Volume) -> str:
    return Unit.VOLUME if isinstance(unit, Volume) else Unit.SCAN


def unit_filter(unit: Scan | Volume) -> dict[str, int]:
    """Keyword arguments selecting the grades or review of ``unit``."""
    return {"volume_id": unit.pk} if isinstance(unit, Volume) else {"scan_id": unit.pk}


# Scans (as a condition on a Scan queryset) that are B-scans of a volume unit, and those
# that are not (``ALONE``: no volume, or a volume of one). A subquery on the volume table,
# not a condition across the nullable join: the planner took the join's NULLs for rare and
# estimated a tier 1 worklist of 1.25M scans at one row, then walked every examination
# for each (minutes, bench/pages.py with seed_scale --volumes). Negated, Django keeps the
# scans without a volume (``volume_id IS NOT NULL`` inside the NOT).
IN_VOLUME_UNIT = Q(volume_id__in=Volume.objects.filter(slice_count__gt=1).values("pk"))
ALONE = ~IN_VOLUME_UNIT


class Tier(models.IntegerChoices):
    QUALITY = 1, "Tier 1: quality control"
    GRADING = 2, "Tier 2: independent grading"
    VERIFICATION = 3, "Tier 3: verification and arbitration"


class ExclusionReason(models.TextChoices):
    SEVERE_ARTIFACT = "severe_artifact", "Severe artifact"
    LOW_RESOLUTION = "low_resolution", "Significant resolution loss"
    NOT_MACULAR_BSCAN = "not_macular_bscan", "Not a B-scan of the macula"
    OTHER = "other", "Other"


class GradeQuerySet(models.QuerySet):
    def current(self) -> "GradeQuerySet":
        """Grades that no correction has superseded."""
        return self.filter(superseded_by__isnull=True)


class OfUnit:
    """What a review or a grade is about: one scan, or one volume graded as one eye."""

    scan_id: int | None
    volume_id: int | None

    @property
    def unit(self) -> Scan | Volume:
        return self.volume if self.volume_id else self.scan  # type: ignore[attr-defined]

    @property
    def unit_kind(self) -> str:
        return Unit.VOLUME if self.volume_id else Unit.SCAN


class Grade(OfUnit, models.Model):
    """One grader's decision on one review unit (a scan or a volume) in one tier. Never
    edited after submission."""

    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="grades", null=True, blank=True)
    volume = models.ForeignKey(Volume, on_delete=models.PROTECT, related_name="grades", null=True, blank=True)
    tier = models.PositiveSmallIntegerField(choices=Tier.choices)
    grader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="oct_grades")
    created_at = models.DateTimeField(auto_now_add=True)
    time_taken_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Time from opening the scan to submitting, measured in the page."
    )
    comment = models.TextField(blank=True, help_text="Free text; the note of a tier 3 verification.")
    # Tier 1.
    accepted = models.BooleanField(null=True, blank=True, help_text="Tier 1: image quality accepted.")
    exclusion_reason = models.CharField(max_length=32, choices=ExclusionReason.choices, blank=True)
    # Tier 2 (label and findings) and tier 3 (final label).
    label = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    finding_cnv = models.BooleanField(
        null=True, blank=True, verbose_name="CNV (active or subretinal fibrosis)"
    )
    finding_macular_edema = models.BooleanField(null=True, blank=True, verbose_name="Macular edema")
    finding_drusen = models.BooleanField(null=True, blank=True, verbose_name="Drusen")
    finding_other = models.BooleanField(null=True, blank=True, verbose_name="Other pathology")
    confidence = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Tier 2: 1 (unsure) to 5 (certain)."
    )
    # What the grader was shown as the current label (blank when blinded), to
    # tell a one-key confirmation from a correction in the statistics.
    reference_label = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    # Tier 2 of a volume: 0-based indices of the B-scans that show the finding.
    key_slices = models.JSONField(default=list, blank=True, help_text="Tier 2 of a volume: key B-scans (0-based).")
    supersedes = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="superseded_by"
    )

    objects = GradeQuerySet.as_manager()

    class Meta:
        ordering = ["scan_id", "tier", "created_at", "id"]
        indexes = [
            models.Index(fields=["grader", "scan"]),
            models.Index(fields=["scan", "tier"]),
            models.Index(fields=["grader", "volume"]),
            models.Index(fields=["volume", "tier"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["scan", "tier", "grader"],
                condition=Q(supersedes__isnull=True),
                name="grade_one_original_per_grader_tier_scan",
            ),
            models.UniqueConstraint(
                fields=["volume", "tier", "grader"],
                condition=Q(supersedes__isnull=True),
                name="grade_one_original_per_grader_tier_volume",
            ),
            models.CheckConstraint(
                condition=Q(scan__isnull=False, volume__isnull=True) | Q(scan__isnull=True, volume__isnull=False),
                name="grade_one_unit",
            ),
            models.CheckConstraint(condition=Q(tier__in=[1, 2, 3]), name="grade_tier_valid"),
            models.CheckConstraint(
                condition=~Q(tier=1)
                | (
                    Q(accepted__isnull=False, label="", confidence__isnull=True)
                    & (Q(accepted=True, exclusion_reason="") | (Q(accepted=False) & ~Q(exclusion_reason="")))
                ),
                name="grade_tier1_fields",
            ),
            models.CheckConstraint(
                condition=~Q(tier=2)
                | (
                    Q(accepted__isnull=True, exclusion_reason="", confidence__gte=1, confidence__lte=5)
                    & ~Q(label="")
                    & Q(
                        finding_cnv__isnull=False,
                        finding_macular_edema__isnull=False,
                        finding_drusen__isnull=False,
                        finding_other__isnull=False,
                    )
                ),
                name="grade_tier2_fields",
            ),
            models.CheckConstraint(
                condition=~Q(tier=3)
                | (Q(accepted__isnull=True, exclusion_reason="", confidence__isnull=True) & ~Q(label="")),
                name="grade_tier3_fields",
            ),
        ]

    def __str__(self) -> str:
        what = f"volume {self.volume_id}" if self.volume_id else f"scan {self.scan_id}"
        return f"Tier {self.tier} grade of {what} by {self.grader}"

    def save(self, *args, **kwargs) -> None:
        # Append-only: a submitted grade is corrected by superseding it, never edited.
        if not self._state.adding:
            raise ValueError("Submitted grades are never edited; supersede them with a correction.")
        super().save(*args, **kwargs)

    @property
    def decision(self) -> str:
        """A short human summary of the decision, whatever the tier."""
        if self.tier == Tier.QUALITY:
            return "accepted" if self.accepted else f"excluded ({self.get_exclusion_reason_display()})"
        return self.label

    @property
    def findings(self) -> dict[str, bool | None]:
        return {
            "cnv": self.finding_cnv,
            "macular_edema": self.finding_macular_edema,
            "drusen": self.finding_drusen,
            "other": self.finding_other,
        }


class Review(OfUnit, models.Model):
    """Where a review unit (a scan or a volume) stands in tiered verification (one row per
    unit, the row we lock)."""

    class Stage(models.TextChoices):
        RECEIVED = "received", "Received"
        QUALITY_CONTROL = "quality_control", "Quality control (tier 1)"
        GRADING = "grading", "Independent grading (tier 2)"
        VERIFICATION = "verification", "Verification (tier 3)"
        ARBITRATION = "arbitration", "Arbitration (tier 3)"
        VERIFIED = "verified", "Verified"
        EXCLUDED = "excluded", "Excluded"

    scan = models.OneToOneField(Scan, on_delete=models.PROTECT, related_name="review", null=True, blank=True)
    volume = models.OneToOneField(Volume, on_delete=models.PROTECT, related_name="review", null=True, blank=True)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.QUALITY_CONTROL, db_index=True)
    required_grades = models.PositiveSmallIntegerField(
        help_text="Independent tier 2 grades required (VERIFICATION_REQUIRED_GRADES when the review began)."
    )
    final_label = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    exclusion_reason = models.CharField(max_length=32, choices=ExclusionReason.choices, blank=True)
    reference_pick = models.BooleanField(
        default=False,
        help_text="A tier 3 grader chose this verified scan as a reference example of its class (shown first).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    stage_changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scan_id"]
        constraints = [
            models.CheckConstraint(condition=Q(required_grades__gte=1), name="review_requires_a_grade"),
            models.CheckConstraint(
                condition=Q(scan__isnull=False, volume__isnull=True) | Q(scan__isnull=True, volume__isnull=False),
                name="review_one_unit",
            ),
            models.CheckConstraint(
                condition=~Q(stage="verified")
                | (~Q(final_label="") & Q(verified_by__isnull=False, verified_at__isnull=False)),
                name="review_verified_has_final_label",
            ),
            models.CheckConstraint(
                condition=~Q(stage="excluded") | ~Q(exclusion_reason=""), name="review_excluded_has_reason"
            ),
        ]
        indexes = [
            # selectors.reference_examples: each class's newest verified reviews, chosen ones first.
            models.Index(
                "final_label", F("reference_pick").desc(), F("verified_at").desc(), F("id").desc(),
                condition=Q(stage="verified"), name="review_reference_candidates",
            ),
        ]

    def __str__(self) -> str:
        what = f"volume {self.volume_id}" if self.volume_id else f"scan {self.scan_id}"
        return f"Review of {what}: {self.get_stage_display()}"

    def get_absolute_url(self) -> str:
        if self.volume_id:
            return reverse("cases:case_detail", args=[self.volume.case_id]) + f"#volume-{self.volume_id}-title"
        return reverse("cases:scan_detail", args=[self.scan_id])


def report_pdf_path(instance: "ReportVersion", filename: str) -> str:
    # Random names, as for scans: nothing about the patient in the file system.
    key = uuid.uuid4().hex
    return f"reports/{key[:2]}/{key}.pdf"


class ReportVersion(models.Model):
    """A clinician's signed examination report: the PDF as signed, never changed.

    ``fingerprint`` is the SHA-256 of what the report says (readings, verification,
    examination details); when that changes the signed version stays as it was and
    the report must be signed again, as the next version.
    """

    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="report_versions")
    number = models.PositiveIntegerField()
    fingerprint = models.CharField(max_length=64)
    # Private like the scan images: served only by cases.views.case_report.
    pdf = models.FileField(upload_to=report_pdf_path, max_length=255)
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField()

    class Meta:
        ordering = ["case_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["case", "number"], name="reportversion_unique_number_per_case"),
            models.CheckConstraint(condition=Q(number__gte=1), name="reportversion_number_positive"),
        ]

    def __str__(self) -> str:
        return f"Report v{self.number} of case {self.case_id}"

    def save(self, *args, **kwargs) -> None:
        # A signed report is locked: a later change makes a new version.
        if not self._state.adding:
            raise ValueError("Signed reports are never edited; sign a new version.")
        super().save(*args, **kwargs)
