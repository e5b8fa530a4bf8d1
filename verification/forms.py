"""Input forms of the grading pages: they validate and hand keyword arguments to services."""
from __future__ import annotations

from typing import Any

from django import forms

from cases.diagnoses import Diagnosis

from .models import ExclusionReason, Tier


class _TimedForm(forms.Form):
    # Filled by grading.js on submit: milliseconds since the page was shown.
    time_taken_ms = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def service_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError


class QualityForm(_TimedForm):
    decision = forms.ChoiceField(
        choices=[("accept", "Accept (A)"), ("exclude", "Exclude (X)")], widget=forms.RadioSelect
    )
    reason = forms.ChoiceField(
        choices=[("", "—")] + list(ExclusionReason.choices), required=False, label="Exclusion reason"
    )
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("decision") == "exclude" and not data.get("reason"):
            self.add_error("reason", "Choose why the scan is excluded.")
        return data

    def service_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        accept = d["decision"] == "accept"
        return {
            "accept": accept,
            "reason": "" if accept else d["reason"],
            "comment": d["comment"],
            "time_taken": d.get("time_taken_ms"),
        }


class GradeForm(_TimedForm):
    label = forms.ChoiceField(choices=Diagnosis.choices, widget=forms.RadioSelect)
    cnv = forms.BooleanField(required=False, label="CNV (active or subretinal fibrosis)")
    macular_edema = forms.BooleanField(required=False, label="Macular edema")
    drusen = forms.BooleanField(required=False, label="Drusen")
    other = forms.BooleanField(required=False, label="Other pathology")
    confidence = forms.TypedChoiceField(
        choices=[(i, str(i)) for i in range(1, 6)], coerce=int, initial=4, widget=forms.RadioSelect,
        help_text="1 unsure … 5 certain",
    )
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)

    def service_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "label": d["label"],
            "findings": {k: d[k] for k in ("cnv", "macular_edema", "drusen", "other")},
            "confidence": d["confidence"],
            "comment": d["comment"],
            "time_taken": d.get("time_taken_ms"),
        }


class VolumeGradeForm(GradeForm):
    """Tier 2 of a volume: the eye's label and findings, and the key B-scans by number
    (1-based, as the viewer counts them; stored 0-based, checked against the volume)."""

    key_bscans = forms.CharField(
        required=False, max_length=2000, label="Key B-scans",
        help_text="B-scan numbers that show the finding, e.g. 12, 25 (M marks the one shown)",
    )

    def clean_key_bscans(self) -> list[int]:
        text = self.cleaned_data.get("key_bscans", "")
        parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
        if not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise forms.ValidationError("Give B-scan numbers (1, 2, …) separated by commas or spaces.")
        return [int(p) - 1 for p in parts]

    def service_kwargs(self) -> dict[str, Any]:
        return {**super().service_kwargs(), "key_slices": self.cleaned_data["key_bscans"]}


class VerifyForm(_TimedForm):
    label = forms.ChoiceField(choices=Diagnosis.choices, widget=forms.RadioSelect, label="Final label")
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000, label="Note")

    def service_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {"final_label": d["label"], "note": d["comment"], "time_taken": d.get("time_taken_ms")}


FORM_FOR_TIER: dict[int, type[_TimedForm]] = {
    Tier.QUALITY: QualityForm,
    Tier.GRADING: GradeForm,
    Tier.VERIFICATION: VerifyForm,
}


def form_for(tier: int, *, volume: bool = False) -> type[_TimedForm]:
    """The form of a tier's grade; tier 2 of a volume also takes key B-scans."""
    return VolumeGradeForm if volume and tier == Tier.GRADING else FORM_FOR_TIER[tier]


def correction_kwargs(form: _TimedForm) -> dict[str, Any]:
    """Map a tier form's output onto ``services.grade_correct``'s keywords."""
    kw = form.service_kwargs()
    if "final_label" in kw:
        return {"label": kw["final_label"], "comment": kw["note"], "time_taken": kw["time_taken"]}
    return kw
