"""The inference app's readiness check (``/readyz``, :mod:`octportal.health`): the model
file this process would load is there, its card names the active model version, and its
SHA-256 is the one registered for that version. Registered in ``InferenceConfig.ready``."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from django.conf import settings

from octportal.health import CheckFailed

from .card import model_file
from .models import ModelVersion

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime): a probe every few seconds must
    not re-read a 13 MB model each time, but a replaced file is hashed again."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache.clear()
        _hash_cache[key] = digest
    return digest


def served_model() -> tuple[Path, str, str]:
    """The model file of OCT_MODEL_PATH (or the shipped one) with its card's name and version."""
    path, card = model_file(settings.OCT_MODEL_PATH or None)
    return path, str(card.get("name", path.stem)), str(card.get("version", "0"))


def check_model() -> str:
    path, name, version = served_model()
    if not path.is_file():
        raise CheckFailed("model file missing")
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        raise CheckFailed("no active model version registered (manage.py register_model)")
    if (active.name, active.version) != (name, version):
        raise CheckFailed("model file is not the active model version")
    if file_sha256(path) != active.sha256:
        raise CheckFailed("model file hash differs from the active model version")
    return f"ok ({active.label})"
