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


# --- education texts (home page and "Learn more" pages) --------------------------------
# Decision support, not a diagnosis: every page that shows these says so.

DECISION_SUPPORT_NOTICE = (
    "Decision support, not a diagnosis. These recommendations summarise common practice; "
    "the treating clinician decides on the basis of the full clinical picture."
)


class ConditionInfo:
    """What the education pages say about one category."""

    def __init__(
        self,
        *,
        code: str,
        slug: str,
        name: str,
        summary: str,
        oct_findings: list[str],
        recommendation: str,
        actions: list[str],
    ) -> None:
        self.code = code
        self.slug = slug
        self.name = name
        self.summary = summary
        self.oct_findings = oct_findings
        self.recommendation = recommendation
        self.actions = actions

    @property
    def urgency(self) -> str:
        return urgency_for(self.code)

    @property
    def urgency_label(self) -> str:
        return Urgency(self.urgency).label


CONDITIONS: dict[str, ConditionInfo] = {
    info.slug: info
    for info in (
        ConditionInfo(
            code=Diagnosis.CNV,
            slug="cnv",
            name="Choroidal neovascularization (CNV)",
            summary="Neovascular membrane with subretinal fluid.",
            oct_findings=[
                "A neovascular membrane under the retina or the retinal pigment epithelium",
                "Subretinal fluid, often with pigment epithelial detachment",
            ],
            recommendation="Immediate referral to a retina specialist for anti-VEGF treatment.",
            actions=[
                "Refer immediately to a retina specialist.",
                "Anti-VEGF intravitreal injections are the standard treatment.",
                "Monitor with OCT every 1–3 months during treatment.",
            ],
        ),
        ConditionInfo(
            code=Diagnosis.DME,
            slug="dme",
            name="Diabetic macular edema (DME)",
            summary="Retinal thickening with intraretinal fluid.",
            oct_findings=[
                "Increased central retinal thickness",
                "Intraretinal fluid cysts, sometimes with subretinal fluid",
            ],
            recommendation="Refer for treatment: anti-VEGF, steroid implants or laser.",
            actions=[
                "Treatment options: anti-VEGF injections, steroid implants or laser photocoagulation.",
                "Optimise glycaemic and blood-pressure control with the diabetes care team.",
                "Follow up with OCT every 3–6 months.",
            ],
        ),
        ConditionInfo(
            code=Diagnosis.DRUSEN,
            slug="drusen",
            name="Drusen (early AMD)",
            summary="Multiple drusen deposits in early age-related macular degeneration.",
            oct_findings=[
                "Multiple drusen: deposits between the retinal pigment epithelium and Bruch's membrane",
                "Preserved retinal layers without fluid",
            ],
            recommendation="Lifestyle measures and monitoring for progression to late AMD.",
            actions=[
                "Consider AREDS2 supplements where appropriate.",
                "Stop smoking; no smoking is the most important modifiable risk factor.",
                "Self-monitor at home with an Amsler grid and report new distortion promptly.",
                "Follow up with OCT every 6–12 months.",
            ],
        ),
        ConditionInfo(
            code=Diagnosis.NORMAL,
            slug="normal",
            name="Normal",
            summary="Preserved foveal contour without fluid or edema.",
            oct_findings=[
                "Normal foveal depression",
                "No intraretinal or subretinal fluid, no drusen",
            ],
            recommendation="Routine eye care.",
            actions=[
                "Routine eye examinations at the usual interval.",
                "Return earlier if vision changes.",
            ],
        ),
    )
}
