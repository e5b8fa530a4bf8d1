"""HTML forms: they check the shape of input; services do the work."""
from __future__ import annotations

from django import forms

from .models import Case, Patient


class PatientForm(forms.ModelForm):
    class Meta:
        model = Patient
        fields = ["identifier", "sex", "birth_year", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 3})}
        help_texts = {"identifier": "A pseudonymous identifier (study id or hashed hospital number). No names."}


class CaseForm(forms.ModelForm):
    class Meta:
        model = Case
        fields = ["eye", "exam_date", "device", "referring_clinician", "status", "notes"]
        widgets = {
            "exam_date": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
            "notes": forms.Textarea(attrs={"rows": 3}),
        }


class CaseCreateForm(CaseForm):
    class Meta(CaseForm.Meta):
        fields = ["eye", "exam_date", "device", "referring_clinician", "notes"]


class PatientSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=64, label="Search by identifier")
