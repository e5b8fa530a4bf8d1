"""What the audit trail writes as text about clinical records.

An entry names its record by type and id ("patient #12"), never by ``str()``: a
patient's identifier or an uploaded file's name (often a person's name when it comes
off a device) would otherwise sit in ``LogEntry.object_repr`` of every entry, including
each view of an image. Free-text fields (notes, the uploaded file name) are recorded
as changed, not what they say; structured fields keep their values so edits stay
auditable.
"""
from __future__ import annotations

from typing import Any

REDACTED = "[redacted]"
# Model names (ContentType.model) of this app whose entries get a neutral name.
AUDITED_MODELS = frozenset({"patient", "case", "scan"})
FREE_TEXT_FIELDS = {"patient": ["notes"], "case": ["notes"], "scan": ["original_name"]}


def redact(value: str) -> str:
    """``mask_callable`` of django-auditlog: the whole value, not auditlog's half."""
    return REDACTED


def neutral_object_repr(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_save`` of ``LogEntry``: "patient #12" instead of the record's ``str()``."""
    content_type = instance.content_type
    if content_type.app_label == "cases" and content_type.model in AUDITED_MODELS:
        instance.object_repr = f"{content_type.model} #{instance.object_pk}"
