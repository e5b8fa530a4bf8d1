"""Automated reading: the model versions a deployment has served and their predictions."""
from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from cases.diagnoses import Diagnosis, Urgency


class ModelVersion(models.Model):
    """One shipped ONNX model, identified by name + version and pinned by its file hash.

    At most one version is active: the one new analyses and re-runs use. Rows are
    registered from ``inference/weights/`` (``manage.py register_model``, and lazily
    by the analysis service when the worker loads a model it has not seen).
    """

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the .onnx file.")
    file_name = models.CharField(max_length=255, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Validation metrics from the model card.")
    card = models.JSONField(default=dict, blank=True, help_text="The model card as shipped.")
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="modelversion_unique_name_version"),
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="modelversion_single_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def heatmap_path(instance: "Prediction", filename: str) -> str:
    # Random names, as for scans: nothing about the patient in the file system.
    key = uuid.uuid4().hex
    return f"predictions/heatmaps/{key[:2]}/{key}.png"


class Prediction(models.Model):
    """The model's reading of one scan by one model version (one per pair, by constraint).

    ``gate_passed`` False means the input gate judged the image not to be a retinal
    OCT B-scan: the probabilities are kept for audit, ``predicted`` and ``urgency``
    stay blank and the scan is marked failed with the gate's reason.
    """

    scan = models.ForeignKey("cases.Scan", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    p_cnv = models.FloatField()
    p_dme = models.FloatField()
    p_drusen = models.FloatField()
    p_normal = models.FloatField()
    predicted = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    confidence = models.FloatField()
    urgency = models.CharField(max_length=16, choices=Urgency.choices, blank=True)
    oct_score = models.FloatField(help_text="Input gate's score that the image is a retinal OCT B-scan.")
    gate_passed = models.BooleanField()
    # Private like the scan images: served only by inference.views.heatmap. Named when the
    # scan is read; since 0004 the file is written when the overlay is first asked for
    # (inference.services.prediction_heatmap_png), from ``heatmap_grid``. Readings made
    # before that had their file written at reading time, and have no grid.
    heatmap = models.FileField(upload_to=heatmap_path, max_length=255, blank=True)
    # The class-activation map on the 4-px grid of the B-scan, as 256 levels in an 8-bit
    # grey PNG (inference.heatmap.heatmap_grid_png, a few KB): what the overlay is drawn from.
    heatmap_grid = models.BinaryField(null=True, blank=True)
    inference_ms = models.FloatField()
    # When not to trust it (inference.quality): null on readings made before it existed.
    quality_score = models.FloatField(
        null=True, blank=True, help_text="Quality / out-of-distribution score in [0, 1]; higher = less to be trusted."
    )
    low_confidence = models.BooleanField(
        default=False, help_text="Score at or above the model card's threshold: 'low confidence, needs review'."
    )
    quality = models.JSONField(
        default=dict, blank=True, help_text="Components (badness 0-1), raw measurements, reasons and threshold."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["scan", "model_version"], name="prediction_unique_scan_version"),
            models.CheckConstraint(
                condition=Q(gate_passed=False) | ~Q(predicted=""), name="prediction_passed_has_class"
            ),
        ]

    def __str__(self) -> str:
        return f"Prediction {self.pk} of scan {self.scan_id}"

    @property
    def probabilities(self) -> dict[str, float]:
        """Calibrated class probabilities keyed by diagnosis code, in vocabulary order."""
        return {
            Diagnosis.CNV.value: self.p_cnv,
            Diagnosis.DME.value: self.p_dme,
            Diagnosis.DRUSEN.value: self.p_drusen,
            Diagnosis.NORMAL.value: self.p_normal,
        }

    @property
    def quality_reasons(self) -> list[str]:
        """Why the reading is low confidence, worst first ("noisy image", "no foveal pit", ...)."""
        return [str(r) for r in (self.quality or {}).get("reasons", [])]

    @property
    def quality_components(self) -> dict[str, float]:
        """Each component's badness in [0, 1] (noise, contrast, pit, uncertainty, gate)."""
        return {str(k): float(v) for k, v in ((self.quality or {}).get("components") or {}).items()}

    @property
    def learn_slug(self) -> str:
        """Slug of the education page of the predicted condition (``cases:learn``)."""
        return self.predicted.lower()
