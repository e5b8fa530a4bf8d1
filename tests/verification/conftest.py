"""Fixtures for tiered verification: scans, graders and model predictions."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from cases.diagnoses import URGENCY_BY_DIAGNOSIS, Diagnosis
from cases.roles import Role
from tests.factories import ScanFactory

FALLBACK_TEMPLATES = Path(__file__).resolve().parent / "templates"


@pytest.fixture(autouse=True)
def _fallback_base_template(settings):
    """Render our pages even where the clinic's ``base.html`` has not landed yet:
    the fallback folder is searched last, so the real one wins when present."""
    dirs = list(settings.TEMPLATES[0]["DIRS"])
    if FALLBACK_TEMPLATES not in dirs:
        templates = [dict(t) for t in settings.TEMPLATES]
        templates[0]["DIRS"] = dirs + [FALLBACK_TEMPLATES]
        settings.TEMPLATES = templates


@pytest.fixture
def scan(db):
    return ScanFactory()


@pytest.fixture
def grader_t2c(user_factory):
    return user_factory("grader2c", Role.GRADER_T2)


@pytest.fixture
def grader_t1b(user_factory):
    return user_factory("grader1b", Role.GRADER_T1)


@pytest.fixture
def grader_t3b(user_factory):
    return user_factory("grader3b", Role.GRADER_T3)


_model_version = None


def active_model_version():
    from inference.models import ModelVersion

    mv = ModelVersion.objects.filter(is_active=True).first()
    if mv is None:
        mv = ModelVersion.objects.create(name="octnet-test", version="1", sha256="0" * 64, is_active=True)
    return mv


def make_prediction(scan, predicted: str = Diagnosis.CNV, *, gate_passed: bool = True, confidence: float = 0.9):
    """Create a Prediction of the active model version for ``scan`` (test helper)."""
    from inference.models import Prediction

    probs = {d: (confidence if d == predicted else (1 - confidence) / 3) for d in Diagnosis.values}
    return Prediction.objects.create(
        scan=scan,
        model_version=active_model_version(),
        p_cnv=probs["CNV"],
        p_dme=probs["DME"],
        p_drusen=probs["DRUSEN"],
        p_normal=probs["NORMAL"],
        predicted=predicted if gate_passed else "",
        confidence=confidence,
        urgency=URGENCY_BY_DIAGNOSIS[predicted] if gate_passed else "",
        oct_score=0.99 if gate_passed else 0.1,
        gate_passed=gate_passed,
        inference_ms=12.0,
    )
