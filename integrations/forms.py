from django import forms
from django.conf import settings

from .models import ApiToken


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What it is for, e.g. 'upload script on the OCT PC'.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    days = forms.IntegerField(min_value=1, max_value=settings.OCT_API_TOKEN_MAX_DAYS, initial=90, label="Valid for (days)")
