"""Write-side services of automated reading.

State machine of ``Scan.status`` (see docs/inference.md)::

    RECEIVED --request--> QUEUED --claim--> RUNNING --> ANALYSED
                            ^                  |  \\--> FAILED (unreadable, gate rejected, model error)
                            |                  |
                            +-- sweep (stale) -+      FAILED/ANALYSED --re-run--> QUEUED

Every transition out of QUEUED is a conditional update, so a task delivered twice,
a task redelivered after a killed worker and a task re-enqueued by the sweep all
end in exactly one prediction per scan and model version.
"""
from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from cases.diagnoses import Diagnosis, urgency_for
from cases.models import Scan
from cases.roles import Role, has_role
from octportal.errors import Conflict, DomainError, Forbidden

from .models import ModelVersion, Prediction

logger = logging.getLogger(__name__)

# Publishing to a broker that is down must not hold an upload for long: try briefly,
# then leave the scan QUEUED for the sweep.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

MSG_UNREADABLE = "The stored image could not be read as an image, so it was not analysed."
MSG_MISSING = "The stored image file is missing, so it was not analysed."
MSG_INTERNAL = "The automated reading failed with an internal error (logged with scan id {id}). Try re-running it."
MSG_GATE = "The image was not accepted as a retinal OCT B-scan by the input check: {reason}"
GATE_DEFAULT_REASON = "it does not look like a retinal OCT B-scan."
MSG_GAVE_UP = "The automated reading did not complete after {n} attempts and was stopped."

ACTIVE_STATUSES = (Scan.Status.QUEUED, Scan.Status.RUNNING)


class ModelMismatch(DomainError):
    """The model file's hash differs from the registered version of the same name."""

    status_code = 500


def _stale_after() -> timedelta:
    return getattr(settings, "OCT_INFERENCE_STALE_AFTER", timedelta(minutes=5))


def _batch_size() -> int:
    return max(1, int(getattr(settings, "OCT_INFERENCE_BATCH_SIZE", 16)))


def _max_attempts() -> int:
    return max(1, int(getattr(settings, "OCT_INFERENCE_MAX_ATTEMPTS", 3)))


def get_model() -> Any:
    """Return the per-process ONNX model (imported late: web processes that never
    analyse need not load onnxruntime)."""
    from .runtime import get_model as runtime_get_model

    return runtime_get_model()


# --- model versions -------------------------------------------------------------------


def model_version_register(
    *, name: str, version: str, sha256: str, file_name: str = "", card: dict | None = None, activate: bool = False
) -> tuple[ModelVersion, bool]:
    """Register a model version (idempotent) and return ``(row, created)``.

    Refuse a known name + version whose file hash differs: a changed model file must
    get a new version so every prediction stays traceable to the file that made it.
    With ``activate`` the version becomes the only active one; a new version is also
    activated when no version is active yet.
    """
    card = _json_safe(card or {})
    metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    with transaction.atomic():
        row = ModelVersion.objects.select_for_update().filter(name=name, version=version).first()
        created = False
        if row is None:
            try:
                with transaction.atomic():
                    row = ModelVersion.objects.create(
                        name=name, version=version, sha256=sha256, file_name=file_name, card=card, metrics=metrics
                    )
                    created = True
            except IntegrityError:
                # Another process registered it first.
                row = ModelVersion.objects.get(name=name, version=version)
        if row.sha256 != sha256:
            raise ModelMismatch(
                f"Model {name} v{version} is registered with a different file hash; give the new file a new version."
            )
        if activate or not ModelVersion.objects.filter(is_active=True).exists():
            _activate(row)
    return row, created


def _json_safe(value: Any) -> Any:
    """Replace NaN/Infinity (valid in Python's json, not in a database JSON column) by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _activate(row: ModelVersion) -> None:
    if row.is_active:
        return
    try:
        with transaction.atomic():
            ModelVersion.objects.filter(is_active=True).exclude(pk=row.pk).update(is_active=False)
            ModelVersion.objects.filter(pk=row.pk).update(is_active=True)
    except IntegrityError:
        # Another process activated a version at the same moment; theirs stands.
        return
    row.is_active = True


def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Make ``model_version`` the only active version (used for analyses and re-runs)."""
    with transaction.atomic():
        _activate(model_version)
    return model_version


def model_version_for(*, model: Any) -> ModelVersion:
    """Return the registered row of a loaded runtime model, registering it on first sight."""
    row = ModelVersion.objects.filter(name=model.name, version=model.version).first()
    if row is not None and row.sha256 == model.sha256:
        return row
    path = getattr(model, "path", None) or getattr(settings, "OCT_MODEL_PATH", "") or ""
    row, _ = model_version_register(
        name=model.name,
        version=model.version,
        sha256=model.sha256,
        file_name=Path(str(path)).name if path else "",
        card=dict(getattr(model, "card", {}) or {}),
    )
    return row


# --- enqueueing -----------------------------------------------------------------------


def _publish(task: Any, *args: Any) -> bool:
    """Send a task; on a broker error log it and return False (the sweep re-enqueues)."""
    try:
        task.apply_async(args=args, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except Exception as exc:  # noqa: BLE001 - any broker failure must not break the caller
        logger.warning(
            "could not enqueue %s for scan ids %s (%s); left queued for the sweep",
            task.name,
            args[0],
            type(exc).__name__,
        )
        return False
    return True


def scan_request_analysis(*, scan: Scan) -> None:
    """Mark a scan queued and enqueue its analysis once the transaction commits.

    If the broker is unreachable the caller still succeeds: the scan stays QUEUED and
    ``sweep_stale_scans`` enqueues it once it is older than OCT_INFERENCE_STALE_AFTER.
    """
    Scan.objects.filter(pk=scan.pk).update(
        status=Scan.Status.QUEUED, status_detail="", status_changed_at=timezone.now()
    )
    scan.status = Scan.Status.QUEUED
    scan.status_detail = ""
    scan_id = scan.pk

    def enqueue() -> None:
        from .tasks import predict_scan

        _publish(predict_scan, scan_id)

    transaction.on_commit(enqueue)


def stale_scans_requeue(*, older_than: timedelta | None = None, limit: int = 5000) -> int:
    """Re-enqueue scans QUEUED or RUNNING for longer than ``older_than``; return how many.

    A scan whose analysis was claimed ``OCT_INFERENCE_MAX_ATTEMPTS`` times without
    finishing (e.g. it kills the worker) is marked FAILED instead of looping forever.
    """
    older_than = _stale_after() if older_than is None else older_than
    now = timezone.now()
    cutoff = now - older_than
    stale = Q(status__in=ACTIVE_STATUSES, status_changed_at__lt=cutoff)
    max_attempts = _max_attempts()
    gave_up = Scan.objects.filter(stale, analysis_attempts__gte=max_attempts).update(
        status=Scan.Status.FAILED, status_detail=MSG_GAVE_UP.format(n=max_attempts), status_changed_at=now
    )
    if gave_up:
        logger.warning("stopped analysis of %d scans after %d attempts", gave_up, max_attempts)
    ids = list(
        Scan.objects.filter(stale, analysis_attempts__lt=max_attempts).order_by("id").values_list("id", flat=True)[
            :limit
        ]
    )
    if not ids:
        return 0
    with transaction.atomic():
        Scan.objects.filter(stale, id__in=ids).update(status=Scan.Status.QUEUED, status_changed_at=now)

        def enqueue() -> None:
            from .tasks import predict_batch

            size = _batch_size()
            for start in range(0, len(ids), size):
                _publish(predict_batch, ids[start : start + size])

        transaction.on_commit(enqueue)
    logger.info("re-enqueued %d stale scans", len(ids))
    return len(ids)


def scans_release(*, scan_ids: Iterable[int]) -> None:
    """Put claimed scans back to QUEUED (before a task retries after a transient error)."""
    Scan.objects.filter(id__in=list(scan_ids), status=Scan.Status.RUNNING).update(
        status=Scan.Status.QUEUED, status_changed_at=timezone.now()
    )


# --- running the model ----------------------------------------------------------------


def _claimable(now) -> Q:
    return Q(status=Scan.Status.QUEUED) | Q(status=Scan.Status.RUNNING, status_changed_at__lt=now - _stale_after())


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
    return _Outcome(image=image)


def _predict(model: Any, outcomes: dict[int, _Outcome]) -> None:
    """Run the model on every readable image, as one batch; isolate failures per image."""
    from .runtime import UnreadableImage

    todo = [sid for sid, o in outcomes.items() if o.image is not None]
    if len(todo) > 1:
        try:
            readings = model.predict_images([outcomes[sid].image for sid in todo])
            for sid, reading in zip(todo, readings, strict=True):
                outcomes[sid].reading = reading
            return
        except SoftTimeLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - one bad image must not fail its batch mates
            logger.info("batch of %d failed; running scan ids %s one by one", len(todo), todo)
    for sid in todo:
        try:
            outcomes[sid].reading = model.predict_images([outcomes[sid].image])[0]
        except UnreadableImage:
            outcomes[sid].failure = MSG_UNREADABLE
        except SoftTimeLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - deterministic model error: fail the scan, never retry
            logger.exception("model failed on scan id %s", sid)
            outcomes[sid].failure = MSG_INTERNAL.format(id=sid)


def _prediction_from(scan_id: int, version: ModelVersion, reading: Any, image: Image.Image) -> Prediction:
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
    if passed and reading.heatmap is not None:
        from .runtime import heatmap_overlay_png

        try:
            png = heatmap_overlay_png(image, reading.heatmap)
        except Exception:  # noqa: BLE001 - the reading stands without its overlay
            logger.exception("heatmap overlay failed for scan id %s", scan_id)
        else:
            prediction.heatmap.save("heatmap.png", ContentFile(png), save=False)
    return prediction


def _finish(scan_id: int, *, prediction: Prediction | None, failure: str) -> Prediction | None:
    """Store the outcome of one scan: the prediction (if any) and its final status, atomically."""
    with transaction.atomic():
        scan = Scan.objects.select_for_update().filter(pk=scan_id).first()
        if scan is None:  # deleted while it was being read
            if prediction is not None and prediction.heatmap:
                prediction.heatmap.delete(save=False)
            return None
        stored = None
        if prediction is not None:
            try:
                with transaction.atomic():
                    prediction.save()
                stored = prediction
            except IntegrityError:
                # Another run of the same scan and version won: keep theirs.
                if prediction.heatmap:
                    prediction.heatmap.delete(save=False)
                stored = Prediction.objects.get(scan_id=scan_id, model_version=prediction.model_version)
        if stored is not None and not stored.gate_passed:
            failure = failure or MSG_GATE.format(reason=GATE_DEFAULT_REASON)
        status = Scan.Status.FAILED if failure else Scan.Status.ANALYSED
        Scan.objects.filter(pk=scan.pk).update(
            status=status, status_detail=failure[:500], status_changed_at=timezone.now()
        )
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
    if not scan_ids or now - since < _stale_after().total_seconds() / 3:
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
    for sid, outcome in outcomes.items():
        beat = scans_heartbeat(scan_ids=todo, since=beat)
        prediction = None
        failure = outcome.failure
        if outcome.reading is not None and not failure:
            prediction = _prediction_from(sid, version, outcome.reading, outcome.image)
            if not prediction.gate_passed:
                reason = _sentence(str(getattr(outcome.reading, "gate_reason", ""))) or GATE_DEFAULT_REASON
                failure = MSG_GATE.format(reason=reason)
        results[sid] = _finish(sid, prediction=prediction, failure=failure)
    return results


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
    others = _claim(_waiting_scan_ids(exclude=scan_id, limit=_batch_size() - 1))
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


def predict_scans(*, scan_ids: Sequence[int]) -> int:
    """Analyse many queued scans in batches of OCT_INFERENCE_BATCH_SIZE; return how many
    ended ANALYSED. Each batch is claimed just before it runs, so other workers can
    share a long list."""
    ids = list(dict.fromkeys(int(i) for i in scan_ids))
    if not ids:
        return 0
    model = get_model()
    version = model_version_for(model=model)
    analysed = 0
    size = _batch_size()
    for start in range(0, len(ids), size):
        claimed = _claim(ids[start : start + size])
        if not claimed:
            continue
        started = time.perf_counter()
        results = _run_claimed(model, version, claimed)
        analysed += sum(1 for p in results.values() if p is not None and p.gate_passed)
        logger.info("batch of %d scans in %.0f ms", len(claimed), (time.perf_counter() - started) * 1000)
    return analysed


# --- clinician actions ----------------------------------------------------------------


def scan_rerun(*, scan: Scan, user: Any) -> Scan:
    """Queue a scan again for the active model version (clinic staff and admins).

    Re-running a scan that the active version already read successfully is refused
    (the result would be identical and the database keeps one prediction per scan and
    version). A failed reading, a gate rejection included, is discarded and redone.
    """
    if not has_role(user, Role.CLINICIAN):
        raise Forbidden("Only clinic staff can re-run the automated reading.")
    with transaction.atomic():
        locked = Scan.objects.select_for_update().get(pk=scan.pk)
        if locked.status in ACTIVE_STATUSES:
            raise Conflict("This scan is already queued for analysis.")
        active = ModelVersion.objects.filter(is_active=True).first()
        if active is not None:
            previous = Prediction.objects.filter(scan=locked, model_version=active).first()
            if previous is not None and previous.gate_passed and locked.status == Scan.Status.ANALYSED:
                raise Conflict(
                    f"This scan has already been read by the active model ({active.label}); "
                    "re-running the same version gives the same result."
                )
            if previous is not None:
                heatmap = previous.heatmap
                previous.delete()
                if heatmap:
                    transaction.on_commit(lambda: heatmap.storage.delete(heatmap.name))
        scan_request_analysis(scan=locked)
    logger.info("scan id %s re-run requested by user id %s", scan.pk, getattr(user, "pk", None))
    scan.status = locked.status
    scan.status_detail = ""
    return scan
