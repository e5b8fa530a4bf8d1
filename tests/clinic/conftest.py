"""Fixtures of the clinic's day tests: private media, readings, verified reviews."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone

from cases.models import Scan
from tests.factories import ScanFactory, review_update
from tests.inference.support import make_prediction, make_version
from verification.models import Review


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def version(db):
    return make_version()


def read_scan(predicted: str = "CNV", *, version=None, confidence: float = 0.8, gate_passed: bool = True, **scan_kwargs):
    """A scan with a stored reading, in the status the run service leaves it in."""
    status = Scan.Status.ANALYSED if gate_passed else Scan.Status.FAILED
    detail = "" if gate_passed else "The image is mostly colour, unlike a B-scan."
    scan = ScanFactory(status=status, status_detail=detail, **scan_kwargs)
    make_prediction(scan, version, predicted, confidence=confidence, gate_passed=gate_passed)
    return scan


def verify(scan: Scan, label: str, by) -> Review:
    """Mark the scan's review verified with ``label`` (display tests; the services are tested elsewhere)."""
    review_update(
        scans=scan, stage=Review.Stage.VERIFIED, final_label=label, verified_by=by, verified_at=timezone.now()
    )
    return Review.objects.get(scan=scan)
