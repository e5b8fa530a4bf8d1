"""Database constraints of model versions and predictions."""
from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from inference.models import ModelVersion
from tests.factories import ScanFactory
from tests.inference.support import make_prediction, make_version

pytestmark = pytest.mark.django_db


def test_only_one_version_can_be_active():
    make_version(version="1.0", active=True)
    make_version(version="1.1", active=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_version(version="1.2", active=True)
    assert ModelVersion.objects.filter(is_active=True).count() == 1


def test_name_and_version_are_unique():
    make_version(version="1.0")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_version(version="1.0", active=False)


def test_one_prediction_per_scan_and_version():
    scan = ScanFactory()
    version = make_version()
    make_prediction(scan, version)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_prediction(scan, version, predicted="DME")
    make_prediction(scan, make_version(version="2.0", active=False), predicted="DME")
    assert scan.predictions.count() == 2


def test_a_passed_reading_must_name_a_class():
    scan = ScanFactory()
    p = make_prediction(scan)
    p.predicted = ""
    with pytest.raises(IntegrityError), transaction.atomic():
        p.save()


def test_probabilities_in_vocabulary_order_and_learn_slug():
    p = make_prediction(ScanFactory(), predicted="DRUSEN", confidence=0.7)
    assert list(p.probabilities) == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert p.probabilities["DRUSEN"] == 0.7 and p.urgency == "routine" and p.learn_slug == "drusen"
    assert make_version(version="3", active=False).label == "octnet v3"
