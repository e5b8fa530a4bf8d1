"""The four diagnostic categories, their referral urgency and recommendations.

One vocabulary for the whole product: the model's class order, grading labels,
the education pages and the referral badge all read from here.
"""
from __future__ import annotations

from django.db import models


class Diagnosis(models.TextChoices):
    CNV = "CNV", "Choroidal neovascularization (CNV)"
    DME = "DME", "Diabetic macular edema (DME)"
    DRUSEN = "DRUSEN", "Drusen (early AMD)"
    NORMAL = "NORMAL", "Normal"


class Urgency(models.TextChoices):
    URGENT = "urgent", "Urgent referral"
    ROUTINE = "routine", "Routine referral"
    OBSERVATION = "observation", "Observation"


URGENCY_BY_DIAGNOSIS: dict[str, str] = {
    Diagnosis.CNV: Urgency.URGENT,
    Diagnosis.DME: Urgency.URGENT,
    Diagnosis.DRUSEN: Urgency.ROUTINE,
    Diagnosis.NORMAL: Urgency.OBSERVATION,
}

# Most urgent first: used to summarise an examination by its worst finding.
URGENCY_RANK: dict[str, int] = {Urgency.URGENT: 0, Urgency.ROUTINE: 1, Urgency.OBSERVATION: 2}


def urgency_for(diagnosis: str) -> str:
    """Return the referral urgency for a diagnosis code."""
    return URGENCY_BY_DIAGNOSIS[Diagnosis(diagnosis)]
