"""The patient-level split (no torch needed)."""
from __future__ import annotations

import pytest

from training import data as D


@pytest.fixture(scope="module")
def manifest(oct_data_dir_or_skip):
    return D.read_manifest(oct_data_dir_or_skip)


@pytest.fixture(scope="module")
def oct_data_dir_or_skip():
    path = D.data_dir()
    if not (path / "MANIFEST.tsv").is_file():
        pytest.skip(f"real OCT images not found at {path} (set OCT_DATA_DIR to the folder holding MANIFEST.tsv)")
    return path


def test_no_patient_is_in_two_splits_and_c8_is_training_only(manifest):
    assignment = D.split_patients(manifest)
    splits = D.split_items(manifest, assignment)
    patients = {k: {i.patient for i in v if i.source != "c8"} for k, v in splits.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert all(i.source != "c8" for i in splits["val"] + splits["test"])
    # A Kermany patient number seen under two classes stays in one split.
    where: dict[str, set[str]] = {}
    for name, items in splits.items():
        for i in items:
            if i.source == "kermany":
                where.setdefault(i.patient, set()).add(name)
    multi_class = {i.patient for i in manifest if i.source == "kermany"}
    assert all(len(s) == 1 for s in where.values())
    assert len(multi_class) == len(where)


def test_split_is_reproducible_and_every_class_reaches_test(manifest):
    a, b = D.split_patients(manifest), D.split_patients(manifest)
    assert a == b
    test = D.split_items(manifest, a)["test"]
    for src, classes in (("kermany", D.CLASSES), ("octdl", ("DME", "NORMAL"))):
        assert {i.label for i in test if i.source == src} >= set(classes)


def test_amd_is_not_a_training_class(manifest):
    train = D.split_items(manifest, D.split_patients(manifest))["train"]
    assert all(i.label in D.CLASSES for i in train if i.in_set)
    assert "AMD" not in D.CLASSES
