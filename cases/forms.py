"""HTML forms: they check the shape of input; services do the work."""
from __future__ import annotations

from django import forms

from .models import Acknowledgement, Case, Patient


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


class AcknowledgementForm(forms.Form):
    action = forms.ChoiceField(choices=Acknowledgement.Action.choices, initial=Acknowledgement.Action.SEEN)
    referred_to = forms.CharField(required=False, max_length=200, label="Referred to")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
