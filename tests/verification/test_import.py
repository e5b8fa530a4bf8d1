"""import_dataset: idempotence on a generated folder, and the real Kermany sample end to end."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from cases.models import Case, Patient, Scan
from verification.models import Review
from tests.factories import synthetic_bscan_png
from tests.inference.support import fake_model  # noqa: F401 - fixture: a test double of the ONNX model


def _make_folder(root: Path) -> Path:
    seed = 0
    for split in ("train", "test"):
        for cls in ("CNV", "DME", "NORMAL"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for patient in (101, 202):
                seed += 1
                (folder / f"{cls}-{patient}-{seed}.jpeg").write_bytes(synthetic_bscan_png(160, 128, seed=seed))
    other = root / "train" / "AMD"  # a class outside our vocabulary is counted, not imported
    other.mkdir()
    (other / "amd_train_1.jpg").write_bytes(synthetic_bscan_png(160, 128, seed=999))
    (root / "train" / "drusen").mkdir()
    (root / "train" / "drusen" / "drusen_train_7.jpg").write_bytes(synthetic_bscan_png(160, 128, seed=77))
    return root


def _run(root: Path, *extra: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_dataset", str(root), "--no-inference", *extra, stdout=out, stderr=err)
    assert "[" in err.getvalue()  # progress bar on stderr
    return out.getvalue()


@pytest.mark.django_db(transaction=False)
def test_import_is_idempotent(tmp_path):
    root = _make_folder(tmp_path / "kermany-like")
    first = _run(root)
    assert "13 imported" in first and "1 in unknown classes" in first
    assert Scan.objects.count() == 13
    assert Patient.objects.filter(identifier="KER-101").exists()
    assert Patient.objects.filter(identifier="IMP-drusen_train_7").exists()
    assert Case.objects.filter(patient__identifier="KER-101").count() == 1
    assert Case.objects.get(patient__identifier="KER-202").eye == Case.Eye.OD
    scan = Scan.objects.get(original_name="DME-101-9.jpeg")
    assert scan.source_label == "DME" and "test/DME/DME-101-9.jpeg" in scan.source_label_origin
    assert Review.objects.count() == 13
    second = _run(root)
    assert "0 imported" in second and "13 already present" in second
    assert Scan.objects.count() == 13 and Patient.objects.count() == 3 and Case.objects.count() == 3


def test_import_limit_is_balanced_across_classes(db, tmp_path):
    root = _make_folder(tmp_path / "kermany-like")
    _run(root, "--limit", "4")
    assert sorted(Scan.objects.values_list("source_label", flat=True)) == ["CNV", "DME", "DRUSEN", "NORMAL"]


def test_import_of_a_missing_folder_fails_clearly(db, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a folder"):
        call_command("import_dataset", str(tmp_path / "nope"), stdout=io.StringIO(), stderr=io.StringIO())


def test_real_kermany_import_then_statistics_show_model_against_source_labels(oct_data, client, grader_t3):
    from inference.models import Prediction

    folder = oct_data / "kermany"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    out = io.StringIO()
    call_command("import_dataset", str(folder), "--limit", "24", stdout=out, stderr=io.StringIO())
    assert Scan.objects.count() == 24
    assert set(Scan.objects.values_list("source_label", flat=True)) == {"CNV", "DME", "DRUSEN", "NORMAL"}
    assert Patient.objects.filter(identifier__startswith="KER-").exists()
    call_command("import_dataset", str(folder), "--limit", "24", stdout=io.StringIO(), stderr=io.StringIO())
    assert Scan.objects.count() == 24
    client.force_login(grader_t3)
    page = client.get(reverse("verification:statistics")).content.decode()
    assert "Model against source labels" in page
    if not Prediction.objects.filter(gate_passed=True).exists():
        pytest.skip("imported, but no ONNX model is available yet (inference/weights or OCT_MODEL_PATH), so no predictions to compare")
    section = page.split('id="model-source"', 1)[1].split("</section>", 1)[0]
    assert "vf-heatmap" in section and "accuracy" in section


def test_import_analyses_in_bulk_and_statistics_compare_model_to_source(fake_model, tmp_path, client, grader_t3):
    from inference.models import Prediction

    root = _make_folder(tmp_path / "kermany-like")
    out = io.StringIO()
    call_command("import_dataset", str(root), stdout=out, stderr=io.StringIO())
    assert "13 analysed in bulk" in out.getvalue()
    assert fake_model.batches and max(fake_model.batches) > 1  # batches, not one by one
    assert Prediction.objects.count() == 13
    client.force_login(grader_t3)
    page = client.get(reverse("verification:statistics")).content.decode()
    section = page.split('id="model-source"', 1)[1].split("</section>", 1)[0]
    # The fake model reads everything as CNV: 4 of the 13 source labels are CNV.
    assert "vf-heatmap" in section and "13 scans" in section and "30.8%" in section
