"""The scan's current reading is defined once (inference.selectors), and every page uses it."""
from __future__ import annotations

from django.urls import reverse

from cases.diagnoses import URGENCY_BY_DIAGNOSIS, Diagnosis, Urgency
from inference import selectors, services
from inference.models import Prediction
from tests.factories import ScanFactory
from tests.inference.support import make_prediction, make_version
from verification.selectors import reference_for


def test_current_reading_is_the_newest_prediction_of_any_version(db):
    scan = ScanFactory(status="analysed")
    old = make_version(version="1.0", active=True)
    make_prediction(scan, old, predicted=Diagnosis.CNV)
    new = make_version(version="2.0", active=False)
    newest = make_prediction(scan, new, predicted=Diagnosis.NORMAL)
    assert selectors.prediction_current(scan=scan) == newest
    assert selectors.predictions_current_by_scan(scan_ids=[scan.pk])[scan.pk] == newest
    assert reference_for(scan=scan).prediction == newest


def test_result_page_and_grading_page_show_the_same_reading_after_a_model_switch(client, clinician, grader_t1, db):
    scan = ScanFactory(status="analysed")
    make_prediction(scan, make_version(version="1.0", active=True), predicted=Diagnosis.DME)
    services.model_version_activate(model_version=make_version(version="2.0", active=False))
    client.force_login(clinician)
    result = client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()
    client.force_login(grader_t1)
    grading = client.get(reverse("verification:grade", args=[scan.pk, 1])).content.decode()
    # Before, grading read only the active version's predictions and showed none here.
    assert "Model octnet v1.0" in result
    assert "Model (octnet v1.0): DME" in grading


def test_urgency_refresh_rederives_stored_urgency_from_the_one_rule(db, monkeypatch):
    scan = ScanFactory()
    p = make_prediction(scan, predicted=Diagnosis.DRUSEN)
    assert p.urgency == Urgency.ROUTINE
    assert services.predictions_urgency_refresh() == 0  # nothing to change
    monkeypatch.setitem(URGENCY_BY_DIAGNOSIS, Diagnosis.DRUSEN, Urgency.URGENT)
    assert services.predictions_urgency_refresh() == 1
    assert Prediction.objects.get(pk=p.pk).urgency == Urgency.URGENT


def test_heatmap_grids_of_many_readings_load_in_one_query(db, django_assert_num_queries):
    import numpy as np

    version = make_version()
    with_grid = [make_prediction(ScanFactory(), version, heatmap_grid=np.full((4, 4), 0.5)) for _ in range(3)]
    without = make_prediction(ScanFactory(), version)
    current = selectors.predictions_current_by_scan(scan_ids=[p.scan_id for p in [*with_grid, without]])
    with django_assert_num_queries(1):
        selectors.predictions_heatmap_grid_load(predictions=current.values())
        grids = [bytes(current[p.scan_id].heatmap_grid) for p in with_grid]
    assert grids == [bytes(p.heatmap_grid) for p in with_grid]
    with django_assert_num_queries(0):  # loaded already; a reading without a heatmap is left alone
        selectors.predictions_heatmap_grid_load(predictions=current.values())
