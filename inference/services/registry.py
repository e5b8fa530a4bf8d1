"""Model registry: which model versions exist, which one is active.

Every prediction points at the registered version (name, version, file hash) that
made it, so a changed model file must be registered as a new version.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from octportal.errors import DomainError

from ..models import ModelVersion


class ModelMismatch(DomainError):
    """The model file's hash differs from the registered version of the same name."""

    status_code = 500


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
    path = getattr(model, "path", None) or settings.OCT_MODEL_PATH
    row, _ = model_version_register(
        name=model.name,
        version=model.version,
        sha256=model.sha256,
        file_name=Path(str(path)).name if path else "",
        card=dict(getattr(model, "card", {}) or {}),
    )
    return row
