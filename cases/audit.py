"""What the audit trail writes as text about clinical records.

An entry names its record by type and id ("patient #12"), never by ``str()``: a
patient's identifier or an uploaded file's name (often a person's name when it comes
off a device) would otherwise sit in ``LogEntry.object_repr`` of every entry, including
each view of an image. Free-text fields (notes, the uploaded file name, the source label's origin) are recorded
as changed, not what they say; structured fields keep their values so edits stay
auditable. Relations other records hold to a record (``scan.predictions``, ``scan.review``)
are not its data and are not logged (``reverse_relations``).
"""
from __future__ import annotations

from typing import Any

from django.db import models

REDACTED = "[redacted]"
# Model names (ContentType.model) of this app whose entries get a neutral name.
AUDITED_MODELS = frozenset({"patient", "case", "scan"})
FREE_TEXT_FIELDS = {"patient": ["notes"], "case": ["notes"], "scan": ["original_name", "source_label_origin"]}


def redact(value: str) -> str:
    """``mask_callable`` of django-auditlog: the whole value, not auditlog's half."""
    return REDACTED


def neutral_object_repr(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_save`` of ``LogEntry``: "patient #12" instead of the record's ``str()``."""
    content_type = instance.content_type
    if content_type.app_label == "cases" and content_type.model in AUDITED_MODELS:
        instance.object_repr = f"{content_type.model} #{instance.object_pk}"


def reverse_relations(model: type[models.Model]) -> list[str]:
    """The relations other models hold to ``model``, for auditlog's ``exclude_fields``.

    django-auditlog logs every field ``_meta.get_fields()`` gives on create and delete,
    reverse relations included: a related manager's repr ("inference.Prediction.None")
    for each one-to-many, and a look-up (one query) of each reverse one-to-one, on every
    record created. Call once the app registry is ready (``AppConfig.ready``).
    """
    return [f.name for f in model._meta.get_fields() if f.auto_created and not f.concrete]
