"""Clinical records: pseudonymous patients, examinations (cases), volumes and B-scans."""
from __future__ import annotations

import uuid
from pathlib import PurePath

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from .diagnoses import Diagnosis


class Recorded(models.Model):
    """Who created a record and when it last changed (patients and examinations)."""

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Patient(Recorded):
    """A pseudonymous patient: no names, only what grading and referral need."""

    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "X", "Other"

    identifier = models.CharField(
        max_length=64, unique=True, help_text="Pseudonymous identifier, e.g. a hospital number hash or study id."
    )
    sex = models.CharField(max_length=1, choices=Sex.choices, blank=True)
    birth_year = models.PositiveSmallIntegerField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["identifier"]
        constraints = [
            models.CheckConstraint(
                condition=Q(birth_year__isnull=True) | Q(birth_year__gte=1900, birth_year__lte=2100),
                name="patient_birth_year_plausible",
            ),
        ]

    def __str__(self) -> str:
        return self.identifier

    def get_absolute_url(self) -> str:
        return reverse("cases:patient_detail", args=[self.pk])


class Case(Recorded):
    """One examination of one eye of a patient."""

    class Eye(models.TextChoices):
        OD = "OD", "OD (right eye)"
        OS = "OS", "OS (left eye)"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        REPORTED = "reported", "Reported"
        CLOSED = "closed", "Closed"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="cases")
    eye = models.CharField(max_length=2, choices=Eye.choices)
    exam_date = models.DateField(db_index=True)  # explore's date filter walks it (verification.filters)
    # Indexed: explore's device filter matches the few device names in use
    # (cases.selectors.devices_matching), then the examinations by name.
    device = models.CharField(max_length=120, blank=True, db_index=True, help_text="e.g. Heidelberg Spectralis")
    referring_clinician = models.CharField(max_length=120, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-exam_date", "-id"]
        indexes = [models.Index(fields=["patient", "-exam_date"])]

    def __str__(self) -> str:
        return f"{self.patient} {self.eye} {self.exam_date:%Y-%m-%d}"

    def get_absolute_url(self) -> str:
        return reverse("cases:case_detail", args=[self.pk])


def _scan_path(folder: str, instance: "Scan", filename: str) -> str:
    # Random names: nothing about the patient or the upload leaks into the file system.
    suffix = PurePath(filename).suffix.lower()[:8]
    return f"scans/{folder}/{instance.uid.hex[:2]}/{instance.uid.hex}{suffix}"


def scan_original_path(instance: "Scan", filename: str) -> str:
    return _scan_path("original", instance, filename)


def scan_image_path(instance: "Scan", filename: str) -> str:
    return _scan_path("image", instance, filename)


def volume_localizer_path(instance: "Volume", filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()[:8]
    return f"volumes/localizer/{instance.uid.hex[:2]}/{instance.uid.hex}{suffix}"


class Uploaded(models.Model):
    """Who uploaded a file-backed record and when (volumes and scans)."""

    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class Volume(Uploaded):
    """One acquisition of an examination: a stack of B-scans in order (an OCT volume).

    Its B-scans are ``Scan`` rows with ``volume`` and ``slice_index`` set. A scan
    uploaded on its own has no volume (a volume of one). Nothing identifying is kept:
    the import de-identifies the source and ``removed_tags`` names what it dropped.
    """

    class SourceFormat(models.TextChoices):
        DICOM = "dicom", "DICOM Ophthalmic Tomography"
        HEYEX_VOL = "heyex_vol", "Heidelberg Heyex .vol"
        HEYEX_XML = "heyex_xml", "Heidelberg Heyex XML"
        IMAGE_ZIP = "zip", "ZIP of B-scan images"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="volumes")
    source_format = models.CharField(max_length=16, choices=SourceFormat.choices)
    modality = models.CharField(max_length=16, blank=True, help_text="e.g. OPT (DICOM modality)")
    scan_pattern = models.CharField(max_length=64, blank=True, help_text="e.g. volume, raster, radial")
    laterality = models.CharField(max_length=2, choices=Case.Eye.choices)
    acquisition_date = models.DateField(null=True, blank=True)
    device = models.CharField(max_length=120, blank=True, help_text="Manufacturer and model, when the file says.")
    slice_count = models.PositiveIntegerField()
    pixel_spacing_axial_mm = models.FloatField(null=True, blank=True, help_text="Row spacing within a B-scan.")
    pixel_spacing_lateral_mm = models.FloatField(null=True, blank=True, help_text="Column spacing within a B-scan.")
    slice_spacing_mm = models.FloatField(null=True, blank=True, help_text="Distance between B-scans.")
    localizer = models.FileField(upload_to=volume_localizer_path, max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the source file as received.")
    original_name = models.CharField(max_length=255)
    removed_tags = models.JSONField(
        default=list, blank=True, help_text="What de-identification removed (DICOM keywords or field names)."
    )

    class Meta:
        ordering = ["uploaded_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["case", "sha256"], name="volume_unique_source_per_case"),
            models.CheckConstraint(condition=Q(slice_count__gt=0), name="volume_has_slices"),
        ]

    def __str__(self) -> str:
        return f"Volume {self.pk} ({self.slice_count} B-scans, {self.laterality})"


class Scan(Uploaded):
    """One OCT B-scan image of a case.

    ``original`` keeps the uploaded bytes untouched where the installation keeps them
    (``OCT_KEEP_UPLOADED_FILES``); ``image`` is the 8-bit grey PNG, rebuilt from the
    pixels alone (no metadata), that the pipeline, the viewer and graders use. ``status`` tracks the automated reading.
    """

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        QUEUED = "queued", "Queued for analysis"
        RUNNING = "running", "Analysing"
        ANALYSED = "analysed", "Analysed"
        FAILED = "failed", "Analysis failed"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="scans")
    volume = models.ForeignKey(Volume, on_delete=models.PROTECT, null=True, blank=True, related_name="scans")
    slice_index = models.PositiveIntegerField(null=True, blank=True, help_text="0-based position in its volume.")
    slice_position_mm = models.FloatField(
        null=True, blank=True, help_text="Position of the B-scan across the volume, where the file says."
    )
    original = models.FileField(
        upload_to=scan_original_path,
        max_length=255,
        blank=True,
        help_text="The uploaded bytes, kept only where OCT_KEEP_UPLOADED_FILES is on (they may carry metadata).",
    )
    image = models.FileField(upload_to=scan_image_path, max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True, help_text="SHA-256 of the original bytes.")
    original_name = models.CharField(max_length=255)
    format = models.CharField(max_length=8, help_text="Decoded format: JPEG, PNG, TIFF or BMP.")
    original_mode = models.CharField(max_length=16, help_text="Pillow mode of the original, e.g. L, RGB, I;16.")
    file_size = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    colour_saturation = models.FloatField(
        null=True, blank=True, help_text="Mean colour saturation of the upload (0 grey); the input gate reads it."
    )
    source_label = models.CharField(
        max_length=8,
        choices=Diagnosis.choices,
        blank=True,
        help_text="Label the scan came with (data-set folder or clinical diagnosis), to be verified.",
    )
    source_label_origin = models.CharField(max_length=120, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    status_detail = models.CharField(max_length=500, blank=True, help_text="Why analysis failed, for people.")
    status_changed_at = models.DateTimeField(auto_now_add=True)
    # A copy of the scan's current reading (inference.selectors.prediction_current), kept
    # by inference.services whenever predictions change, so that lists filter, count and
    # sort on it in SQL at millions of scans. Blank while the scan has no passed reading.
    current_class = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    current_urgency = models.CharField(max_length=16, blank=True)
    current_urgent = models.BooleanField(default=False, help_text="current_urgency is urgent (worklist order).")
    # A copy of where the scan's review unit stands (its own review, or its volume's for a
    # B-scan of a multi-slice volume), kept by verification.services whenever a review
    # changes, so that explore filters and counts stages and verified labels on the scan
    # row alone. Blank without a review; review_label is blank unless verified.
    review_stage = models.CharField(max_length=16, blank=True)
    review_label = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    analysis_attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["uploaded_at", "id"]
        constraints = [
            # A lone upload is unique by content in its case; a volume's B-scans by position
            # (two slices of a volume may be identical, e.g. blank frames).
            models.UniqueConstraint(
                fields=["case", "sha256"], condition=Q(volume__isnull=True), name="scan_unique_image_per_case"
            ),
            models.UniqueConstraint(fields=["volume", "slice_index"], name="scan_unique_slice_per_volume"),
            models.CheckConstraint(condition=Q(width__gt=0) & Q(height__gt=0), name="scan_positive_size"),
            models.CheckConstraint(
                condition=Q(volume__isnull=True, slice_index__isnull=True)
                | Q(volume__isnull=False, slice_index__isnull=False),
                name="scan_slice_index_with_volume",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "status_changed_at"]),
            # Worklists: urgent first, then oldest; list endpoints: upload order.
            models.Index(fields=["-current_urgent", "uploaded_at", "id"], name="scan_urgent_then_oldest"),
            models.Index(fields=["current_class", "-uploaded_at"], name="scan_class_newest"),
            models.Index(fields=["current_urgency", "-uploaded_at"], name="scan_urgency_newest"),
            # Explore's capped counts of every category under any mix of class, urgency,
            # stage, verified-label and agreement filters: an index-only range each
            # (verification.selectors.explore_count_querysets spells out every column).
            models.Index(
                fields=["current_class", "current_urgency", "review_stage", "review_label"], name="scan_explore_cells"
            ),
            models.Index(fields=["uploaded_at", "id"], name="scan_upload_order"),
        ]

    def __str__(self) -> str:
        return f"Scan {self.pk} ({self.original_name})"

    @property
    def code(self) -> str:
        """A neutral name for people who may not see the uploaded file name (graders)."""
        return f"SCAN-{self.pk:06d}"

    def get_absolute_url(self) -> str:
        return reverse("cases:scan_detail", args=[self.pk])


class Acknowledgement(models.Model):
    """A clinician's acknowledgement of a scan's result ("seen", "referred to ..."),
    which takes the scan off the clinic's list of results needing attention."""

    class Action(models.TextChoices):
        SEEN = "seen", "Seen"
        REFERRED = "referred", "Referred"

    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="acknowledgements")
    action = models.CharField(max_length=16, choices=Action.choices)
    referred_to = models.CharField(max_length=200, blank=True, help_text="Who the patient was referred to.")
    note = models.TextField(blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["scan", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(action="referred") | ~Q(referred_to=""), name="acknowledgement_referral_names_whom"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} scan {self.scan_id}"

    @property
    def summary(self) -> str:
        return f"Referred to {self.referred_to}" if self.action == self.Action.REFERRED else "Seen"
