"""Fixtures of the cases tests: a private media folder per test, upload helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import CaseFactory


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """Every test writes media into its own empty folder, so 'nothing stored' is checkable.

    These tests keep the uploaded bytes too (a clinic's choice, OCT_KEEP_UPLOADED_FILES),
    so both stored files are checked; tests of the default set it back to False."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    settings.OCT_KEEP_UPLOADED_FILES = True
    return root


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.fixture
def case(db):
    return CaseFactory()
