"""Write-side services of automated reading, by concern.

- :mod:`.registry`: model versions (register, activate, the row of a loaded model);
- :mod:`.queue`: request a reading, re-run it, release and re-enqueue stale scans;
- :mod:`.run`: claim queued scans, run the model in batches, store the readings;
- :mod:`.overlays`: heatmap overlays rendered when first asked for, then kept.

State machine of ``Scan.status`` (see docs/inference.md)::

    RECEIVED --request--> QUEUED --claim--> RUNNING --> ANALYSED
                            ^                  |  \\--> FAILED (unreadable, gate rejected, model error)
                            |                  |
                            +-- sweep (stale) -+      FAILED/ANALYSED --re-run--> QUEUED
"""
from .queue import (
    ACTIVE_STATUSES,
    scan_request_analysis,
    scan_rerun,
    scans_release,
    scans_request_analysis,
    stale_scans_requeue,
)
from .overlays import prediction_heatmap_png
from .registry import ModelMismatch, model_version_activate, model_version_for, model_version_register
from .run import (
    MSG_GATE,
    MSG_INTERNAL,
    MSG_MISSING,
    MSG_UNREADABLE,
    get_model,
    predict_scans,
    prediction_run,
    predictions_urgency_refresh,
    scans_heartbeat,
)

__all__ = [
    "ACTIVE_STATUSES",
    "MSG_GATE",
    "MSG_INTERNAL",
    "MSG_MISSING",
    "MSG_UNREADABLE",
    "ModelMismatch",
    "get_model",
    "model_version_activate",
    "model_version_for",
    "model_version_register",
    "predict_scans",
    "prediction_heatmap_png",
    "prediction_run",
    "predictions_urgency_refresh",
    "scan_request_analysis",
    "scan_rerun",
    "scans_heartbeat",
    "scans_release",
    "scans_request_analysis",
    "stale_scans_requeue",
]
