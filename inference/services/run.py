"""Running the model: claim queued scans, read them in batches, store the readings.

Every transition out of QUEUED is a conditional update, so a task delivered twice,
a task redelivered after a killed worker and a task re-enqueued by the sweep all
end in exactly one prediction per scan and model version.
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from cases.diagnoses import URGENCY_BY_DIAGNOSIS, Diagnosis, Urgency, urgency_for
from cases.models import Scan

from .. import runtime
from ..models import ModelVersion, Prediction
from ..selectors import prediction_current, predictions_current_by_scan
from .overlays import prediction_heatmap_grid_set
from .registry import model_version_for

logger = logging.getLogger(__name__)

MSG_UNREADABLE = "The stored image could not be read as an image, so it was not analysed."
MSG_MISSING = "The stored image file is missing, so it was not analysed."
MSG_INTERNAL = "The automated reading failed with an internal error (logged with scan id {id}). Try re-running it."
MSG_GATE = "The image was not accepted as a retinal OCT B-scan by the input check: {reason}"
GATE_DEFAULT_REASON = "it does not look like a retinal OCT B-scan."


def get_model() -> runtime.Model:
    """Return the per-process ONNX model, configured from the settings."""
    return runtime.get_model(
        settings.OCT_MODEL_PATH or None,
        intra_op_threads=settings.OCT_ORT_INTRA_OP_THREADS,
        inter_op_threads=settings.OCT_ORT_INTER_OP_THREADS,
        batch_threads=settings.OCT_BATCH_THREADS,
    )


def _claimable(now) -> Q:
    return Q(status=Scan.Status.QUEUED) | Q(status=Scan.Status.RUNNING, status_changed_at__lt=now - settings.OCT_INFERENCE_STALE_AFTER)


def _claim(scan_ids: Sequence[int]) -> list[int]:
    """Move claimable scans to RUNNING and return the ids this process now owns."""
    if not scan_ids:
        return []
    now = timezone.now()
    changes = dict(
        status=Scan.Status.RUNNING,
        status_detail="",
        status_changed_at=now,
        analysis_attempts=F("analysis_attempts") + 1,
    )
    if len(scan_ids) == 1:
        updated = Scan.objects.filter(_claimable(now), id=scan_ids[0]).update(**changes)
        return list(scan_ids) if updated else []
    with transaction.atomic():
        # Rows another worker is claiming right now are skipped, not waited for.
        ids = list(
            Scan.objects.select_for_update(skip_locked=True)
            .filter(_claimable(now), id__in=list(scan_ids))
            .order_by("id")
            .values_list("id", flat=True)
        )
        if ids:
            Scan.objects.filter(id__in=ids).update(**changes)
    return ids


@dataclass
class _Outcome:
    reading: Any = None
    image: Image.Image | None = None
    saturation: float | None = None  # of the upload: the stored grey copy has none
    failure: str = ""


def _load_image(scan: Scan) -> _Outcome:
    try:
        with scan.image.open("rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ValueError):
        return _Outcome(failure=MSG_MISSING)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, ValueError):
        return _Outcome(failure=MSG_UNREADABLE)
    return _Outcome(image=image, saturation=scan.colour_saturation)


def _predict(model: Any, outcomes: dict[int, _Outcome]) -> None:
    """Run the model on every readable image, as one batch; isolate failures per image."""
    todo = [sid for sid, o in outcomes.items() if o.image is not None]
    if len(todo) > 1:
        try:
            readings = model.predict_images(
                [outcomes[sid].image for sid in todo], saturations=[outcomes[sid].saturation for sid in todo]
            )
            for sid, reading in zip(todo, readings, strict=True):
                outcomes[sid].reading = reading
            return
        except SoftTimeLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - one bad image must not fail its batch mates
            logger.info("batch of %d failed; running scan ids %s one by one", len(todo), todo)
    for sid in todo:
        try:
            o = outcomes[sid]
            o.reading = model.predict_images([o.image], saturations=[o.saturation])[0]
        except runtime.UnreadableImage:
            outcomes[sid].failure = MSG_UNREADABLE
        except SoftTimeLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - deterministic model error: fail the scan, never retry
            logger.exception("model failed on scan id %s", sid)
            outcomes[sid].failure = MSG_INTERNAL.format(id=sid)


def _prediction_from(scan_id: int, version: ModelVersion, reading: Any) -> Prediction:
    probs = {str(k).upper(): float(v) for k, v in reading.probabilities.items()}
    passed = bool(reading.gate_passed)
    predicted = str(reading.predicted).upper() if passed else ""
    prediction = Prediction(
        scan_id=scan_id,
        model_version=version,
        p_cnv=probs.get(Diagnosis.CNV, 0.0),
        p_dme=probs.get(Diagnosis.DME, 0.0),
        p_drusen=probs.get(Diagnosis.DRUSEN, 0.0),
        p_normal=probs.get(Diagnosis.NORMAL, 0.0),
        predicted=predicted,
        confidence=float(reading.confidence),
        urgency=urgency_for(predicted) if predicted else "",
        oct_score=float(reading.oct_score),
        gate_passed=passed,
        inference_ms=float(reading.inference_ms),
    )
    quality = getattr(reading, "quality", None)
    if quality is not None:
        prediction.quality_score = float(quality.score)
        prediction.low_confidence = bool(passed and quality.flagged)
        prediction.quality = quality.as_dict()
    if passed and reading.heatmap is not None:
        # Few overlays are ever looked at: keep the grid they are drawn from and the name
        # the overlay will be stored under when first asked for (prediction_heatmap_png).
        try:
            prediction_heatmap_grid_set(prediction=prediction, heatmap=reading.heatmap)
        except Exception:  # noqa: BLE001 - the reading stands without its heatmap
            logger.exception("heatmap grid failed for scan id %s", scan_id)
    return prediction


def _finish(scan_id: int, *, prediction: Prediction | None, failure: str) -> Prediction | None:
    """Store the outcome of one scan: the prediction (if any) and its final status, atomically
    (a batch's are stored together by ``_store_batch``)."""
    with transaction.atomic():
        if not Scan.objects.select_for_update().filter(pk=scan_id).exists():  # deleted meanwhile
            return None
        # Another run of the same scan and version may have won: then keep theirs.
        stored = _prediction_save(prediction) if prediction is not None else None
        status, detail = _final_status(stored, failure)
        _statuses_store({(status, detail): [scan_id]})
        scan_reading_copy(scan_id=scan_id)
    logger.info("scan id %s %s", scan_id, status)
    return stored


def scans_heartbeat(*, scan_ids: Sequence[int], since: float) -> float:
    """Refresh the claim time of scans this process still holds RUNNING, at most every
    third of OCT_INFERENCE_STALE_AFTER; return when it last did (``time.monotonic()``).

    The sweep takes a RUNNING scan older than the threshold for one whose worker died. A
    batch of very large images can run for tens of seconds; the heartbeat keeps a live
    batch from looking dead, so the threshold can stay short (docs/deployment.md).
    """
    now = time.monotonic()
    if not scan_ids or now - since < settings.OCT_INFERENCE_STALE_AFTER.total_seconds() / 3:
        return since
    Scan.objects.filter(id__in=list(scan_ids), status=Scan.Status.RUNNING).update(status_changed_at=timezone.now())
    return now


def _run_claimed(model: Any, version: ModelVersion, scan_ids: list[int]) -> dict[int, Prediction | None]:
    beat = time.monotonic()
    results: dict[int, Prediction | None] = {}
    done = dict(
        Prediction.objects.filter(scan_id__in=scan_ids, model_version=version).values_list("scan_id", "id")
    )
    for sid in [s for s in scan_ids if s in done]:
        # Idempotent: already read by this version (e.g. a redelivered task).
        results[sid] = _finish(sid, prediction=Prediction.objects.get(pk=done[sid]), failure="")
    todo = [s for s in scan_ids if s not in done]
    scans = {s.pk: s for s in Scan.objects.filter(pk__in=todo)}
    outcomes = {sid: _load_image(scans[sid]) for sid in todo if sid in scans}
    beat = scans_heartbeat(scan_ids=todo, since=beat)
    _predict(model, outcomes)
    finished: list[tuple[int, Prediction | None, str]] = []
    for sid, outcome in outcomes.items():
        beat = scans_heartbeat(scan_ids=todo, since=beat)
        prediction = None
        failure = outcome.failure
        if outcome.reading is not None and not failure:
            prediction = _prediction_from(sid, version, outcome.reading)
            if not prediction.gate_passed:
                reason = _sentence(str(getattr(outcome.reading, "gate_reason", ""))) or GATE_DEFAULT_REASON
                failure = MSG_GATE.format(reason=reason)
        finished.append((sid, prediction, failure))
    results.update(_store_batch(finished))
    return results


def _store_batch(finished: list[tuple[int, Prediction | None, str]]) -> dict[int, Prediction | None]:
    """Store a batch's outcomes: its predictions, each scan's final status, the readings' copy.

    In one transaction: one commit (a disk flush on SQLite and PostgreSQL) instead of one
    per scan; the predictions in one savepoint (the per-scan fallback only when another
    run of one of them won the race); the statuses in one update per distinct outcome.
    """
    results: dict[int, Prediction | None] = {}
    with transaction.atomic():
        ids = [sid for sid, _, _ in finished]
        present = set(Scan.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
        # A scan deleted while it was read gets nothing (its heatmap was never written).
        rows = [(sid, prediction, failure) for sid, prediction, failure in finished if sid in present]
        predictions = [prediction for _, prediction, _ in rows if prediction is not None]
        try:
            with transaction.atomic():
                for prediction in predictions:
                    prediction.save()
        except IntegrityError:
            for prediction in predictions:  # rolled back: saved again one by one
                prediction.pk, prediction._state.adding = None, True
            predictions = [_prediction_save(prediction) for prediction in predictions]
        stored = {prediction.scan_id: prediction for prediction in predictions}
        outcomes: dict[tuple[str, str], list[int]] = {}
        for sid, _, failure in rows:
            prediction = stored.get(sid)
            outcomes.setdefault(_final_status(prediction, failure), []).append(sid)
            results[sid] = prediction
        _statuses_store(outcomes)
        scans_reading_copy(scan_ids=ids)
    for (status, _), members in outcomes.items():
        logger.info("scan ids %s %s", members, status)
    return results


def _final_status(stored: Prediction | None, failure: str) -> tuple[str, str]:
    """The final status of a read scan and its detail (the failure message, at most 500
    characters), from its stored prediction (if any) and the failure found while reading it.

    A stored reading that did not pass the input check fails the scan, with the check's
    default reason when no other message was given (e.g. another run's reading was kept).
    """
    if stored is not None and not stored.gate_passed:
        failure = failure or MSG_GATE.format(reason=GATE_DEFAULT_REASON)
    return (Scan.Status.FAILED if failure else Scan.Status.ANALYSED), failure[:500]


def _statuses_store(outcomes: dict[tuple[str, str], list[int]]) -> None:
    """Set the final (status, detail) of each group of scans: one update per distinct outcome."""
    now = timezone.now()
    for (status, detail), members in outcomes.items():
        Scan.objects.filter(pk__in=members).update(status=status, status_detail=detail, status_changed_at=now)


def _prediction_save(prediction: Prediction) -> Prediction:
    """Save ``prediction``, or return the one another run of the same scan and version stored first."""
    try:
        with transaction.atomic():
            prediction.save()
        return prediction
    except IntegrityError:
        return Prediction.objects.get(scan_id=prediction.scan_id, model_version=prediction.model_version)


def _sentence(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text


def prediction_run(*, scan_id: int) -> Prediction | None:
    """Analyse one queued scan with the loaded model; return its prediction.

    Other scans waiting in QUEUED (up to OCT_INFERENCE_BATCH_SIZE in all) are claimed
    and run in the same model batch.

    Return None when the scan was not claimable (already running elsewhere, done, or
    not queued) or when it failed without a prediction (unreadable image).
    """
    # Load the model before claiming: if it cannot load, the scan stays QUEUED.
    model = get_model()
    version = model_version_for(model=model)
    if not _claim([scan_id]):
        logger.info("scan id %s not claimable; skipped", scan_id)
        return None
    # Take other waiting scans along as one model batch (faster per scan when a queue
    # builds up); their own messages then find nothing to claim and return at once.
    others = _claim(_waiting_scan_ids(exclude=scan_id, limit=settings.OCT_INFERENCE_BATCH_SIZE - 1))
    return _run_claimed(model, version, [scan_id, *others]).get(scan_id)


def _waiting_scan_ids(*, exclude: int, limit: int) -> list[int]:
    if limit <= 0:
        return []
    return list(
        Scan.objects.filter(status=Scan.Status.QUEUED)
        .exclude(pk=exclude)
        .order_by("status_changed_at", "id")
        .values_list("id", flat=True)[:limit]
    )


def batches_of(ids: Sequence[int], size: int) -> list[list[int]]:
    """``ids`` in order, cut into as few batches of at most ``size`` as can be, of even sizes.

    49 B-scans in batches of 16 are 13 + 12 + 12 + 12, not 16 + 16 + 16 + 1: workers that
    share a volume's batches then finish together (two workers: 25 B-scans each instead of 32 and 17)."""
    ids = list(ids)
    if not ids:
        return []
    count = -(-len(ids) // max(1, size))
    base, extra = divmod(len(ids), count)
    out, start = [], 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        out.append(ids[start:end])
        start = end
    return out


def predict_scans(*, scan_ids: Sequence[int]) -> int:
    """Analyse many queued scans in batches of at most OCT_INFERENCE_BATCH_SIZE; return how
    many ended ANALYSED. Each batch is claimed just before it runs, so other workers can
    share a long list."""
    ids = list(dict.fromkeys(int(i) for i in scan_ids))
    if not ids:
        return 0
    model = get_model()
    version = model_version_for(model=model)
    analysed = 0
    for batch in batches_of(ids, settings.OCT_INFERENCE_BATCH_SIZE):
        claimed = _claim(batch)
        if not claimed:
            continue
        started = time.perf_counter()
        results = _run_claimed(model, version, claimed)
        analysed += sum(1 for p in results.values() if p is not None and p.gate_passed)
        logger.info("batch of %d scans in %.0f ms", len(claimed), (time.perf_counter() - started) * 1000)
    return analysed


def scan_reading_copy(*, scan_id: int) -> None:
    """Copy the scan's current reading (class, urgency) onto the scan, where lists filter,
    count and sort on it in SQL. Called wherever a scan's predictions change."""
    current = prediction_current(scan=Scan(pk=scan_id))
    passed = current is not None and current.gate_passed
    fields = {
        "current_class": current.predicted if passed else "",
        "current_urgency": current.urgency if passed else "",
        "current_urgent": bool(passed and current.urgency == Urgency.URGENT),
    }
    Scan.objects.filter(pk=scan_id).update(**fields)


def scans_reading_copy(*, scan_ids: Sequence[int]) -> None:
    """``scan_reading_copy`` for many scans: one query for their current readings, one
    update per distinct (class, urgency)."""
    ids = list(scan_ids)
    if not ids:
        return
    current = predictions_current_by_scan(scan_ids=ids)
    groups: dict[tuple[str, str], list[int]] = {}
    for sid in ids:
        p = current.get(sid)
        key = (p.predicted, p.urgency) if p is not None and p.gate_passed else ("", "")
        groups.setdefault(key, []).append(sid)
    for (predicted, urgency), members in groups.items():
        Scan.objects.filter(pk__in=members).update(
            current_class=predicted, current_urgency=urgency, current_urgent=urgency == Urgency.URGENT
        )


def scans_reading_copy_refresh() -> int:
    """Bring the scans' copied urgency in line with ``URGENCY_BY_DIAGNOSIS`` (after
    ``predictions_urgency_refresh``): the urgency follows the copied class."""
    changed = 0
    for code, urgency in URGENCY_BY_DIAGNOSIS.items():
        changed += (
            Scan.objects.filter(current_class=code)
            .exclude(current_urgency=urgency)
            .update(current_urgency=urgency, current_urgent=(urgency == Urgency.URGENT))
        )
    return changed


def predictions_urgency_refresh() -> int:
    """Recompute every stored prediction's referral urgency from ``URGENCY_BY_DIAGNOSIS``.

    The urgency is stored (worklists and lists sort and filter on it in SQL) but always
    derived from the predicted class by that one table; a change of the table reaches
    the stored rows through a data migration that calls this. Return the rows changed.
    """
    rule = Case(
        *(When(predicted=code, then=Value(str(urgency))) for code, urgency in URGENCY_BY_DIAGNOSIS.items()),
        default=Value(""),
    )
    changed = Prediction.objects.exclude(urgency=rule).update(urgency=rule)
    if changed:
        scans_reading_copy_refresh()
    return changed
