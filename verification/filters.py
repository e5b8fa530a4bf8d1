"""The explore page's filters (django-filter) over ``selectors.explore_scans``.

Filters on the model's reading (class, urgency) and on the label (verified class,
agreement) match only scans whose reading the user may see (``reading_visible``, from
the blinding rule): a blinded tier 2 grader cannot find a scan by its hidden class.
"""
from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db.models import F, Q, QuerySet

from cases.diagnoses import Diagnosis, Urgency
from inference.models import ModelVersion

from .models import Review

AGREEMENT_CHOICES = (
    ("agree", "Verified label agrees with the model"),
    ("disagree", "Verified label differs from the model"),
    ("unverified", "Not verified yet"),
)
DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
VERIFIED = Q(review__stage=Review.Stage.VERIFIED)


class ExploreFilter(django_filters.FilterSet):
    predicted = django_filters.ChoiceFilter(
        label="Predicted class", choices=Diagnosis.choices, method="filter_predicted", empty_label="Any"
    )
    verified = django_filters.ChoiceFilter(
        label="Verified class", choices=Diagnosis.choices, method="filter_verified", empty_label="Any"
    )
    agreement = django_filters.ChoiceFilter(
        label="Agreement", choices=AGREEMENT_CHOICES, method="filter_agreement", empty_label="Any"
    )
    urgency = django_filters.ChoiceFilter(
        label="Urgency", choices=Urgency.choices, method="filter_urgency", empty_label="Any"
    )
    stage = django_filters.ChoiceFilter(
        label="Verification stage", field_name="review__stage", choices=Review.Stage.choices, empty_label="Any"
    )
    model_version = django_filters.ModelChoiceFilter(
        label="Model version",
        queryset=ModelVersion.objects.order_by("-created_at"),
        method="filter_model_version",
        empty_label="Any",
    )
    date_from = django_filters.DateFilter(
        label="Exam from", field_name="case__exam_date", lookup_expr="gte", widget=DATE_WIDGET
    )
    date_to = django_filters.DateFilter(label="Exam to", field_name="case__exam_date", lookup_expr="lte", widget=DATE_WIDGET)
    device = django_filters.CharFilter(label="Device", field_name="case__device", lookup_expr="icontains")

    def filter_predicted(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.filter(reading_visible=True, reading_predicted=value)  # the copy is blank unless read

    def filter_urgency(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.filter(reading_visible=True, reading_urgency=value)

    def filter_verified(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.filter(VERIFIED, reading_visible=True, review__final_label=value)

    def filter_agreement(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        if value == "unverified":
            return qs.exclude(VERIFIED)
        verified = qs.filter(VERIFIED, reading_visible=True).exclude(reading_predicted="")
        same = Q(review__final_label=F("reading_predicted"))
        return verified.filter(same) if value == "agree" else verified.exclude(same)

    def filter_model_version(self, qs: QuerySet, name: str, value: Any) -> QuerySet:
        return qs.filter(reading_model_version_id=value.pk)
