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


def correction_kwargs(form: _TimedForm) -> dict[str, Any]:
    """Map a tier form's output onto ``services.grade_correct``'s keywords."""
    kw = form.service_kwargs()
    if "final_label" in kw:
        return {"label": kw["final_label"], "comment": kw["note"], "time_taken": kw["time_taken"]}
    return kw
