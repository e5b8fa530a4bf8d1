"""The audit trail of a scan as people read it: field names in words, users by name,
choices by label, and no internal storage paths."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.utils.text import capfirst

EMPTY = ("", "None", None)


@dataclass(frozen=True)
class AuditRow:
    timestamp: Any
    actor: str
    subject: str
    action: str
    changes: list[str]


def _field(model: type[models.Model] | None, name: str) -> models.Field | None:
    if model is None:
        return None
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return field if isinstance(field, models.Field) else None  # not a reverse relation


def _is_user_fk(field: models.Field | None) -> bool:
    return bool(field is not None and field.is_relation and field.related_model is get_user_model())


def _value(field: models.Field | None, raw: Any, users: dict[str, str]) -> str:
    if raw in EMPTY:
        return ""
    if _is_user_fk(field):
        return users.get(str(raw), f"user #{raw}")
    if field is not None and field.choices:
        return str(dict(field.flatchoices).get(raw, dict((str(k), v) for k, v in field.flatchoices).get(str(raw), raw)))
    if isinstance(field, models.BooleanField):
        return {"True": "yes", "False": "no"}.get(str(raw), str(raw))
    return str(raw)


def _change(field: models.Field | None, name: str, old: Any, new: Any, users: dict[str, str]) -> str:
    label = capfirst(str(field.verbose_name)) if field is not None else capfirst(name.replace("_", " "))
    if isinstance(field, models.FileField):
        # Storage paths are internal (random names on the server's disk): say only what happened.
        return f"{label} stored" if old in EMPTY else f"{label} replaced"
    before, after = _value(field, old, users), _value(field, new, users)
    if not before:
        return f"{label} set to {after}"
    if not after:
        return f"{label} cleared (was {before})"
    return f"{label} changed from {before} to {after}"


def _subject(entry: Any) -> str:
    model = entry.content_type.model_class()
    name = capfirst(str(model._meta.verbose_name)) if model is not None else entry.content_type.model
    return f"{name} #{entry.object_pk}"


def audit_rows(entries: list[Any]) -> list[AuditRow]:
    """Readable rows of auditlog entries; the users they name are looked up in one query."""
    user_ids: set[str] = set()
    for e in entries:
        model = e.content_type.model_class()
        for name, change in (e.changes_dict or {}).items():
            if _is_user_fk(_field(model, name)):
                user_ids.update(str(v) for v in change if v not in EMPTY)
    users = {
        str(pk): username
        for pk, username in get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username")
    } if user_ids else {}
    rows = []
    for e in entries:
        model = e.content_type.model_class()
        changes = [
            _change(_field(model, name), name, change[0], change[1], users)
            for name, change in (e.changes_dict or {}).items()
            if isinstance(change, (list, tuple)) and len(change) == 2
        ]
        rows.append(
            AuditRow(
                timestamp=e.timestamp,
                actor=e.actor.get_username() if e.actor else "system",
                subject=_subject(e),
                action=e.get_action_display(),
                changes=changes,
            )
        )
    return rows
