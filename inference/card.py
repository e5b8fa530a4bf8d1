"""The shipped model's card (``inference/weights/model.json``): where it is and how it is read.

The card names the ONNX file, its version, the class order, the gate threshold and
the preprocessing constants the model was trained with. numpy-free and Django-free,
so training, serving and the benches read it the same way.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_JSON = WEIGHTS_DIR / "model.json"


@lru_cache(maxsize=8)
def _read_json(path: str, mtime: float) -> dict[str, Any]:
    # mtime is part of the cache key so that a re-exported model.json is picked up.
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_model_json(path: str | Path | None = None) -> dict[str, Any]:
    """Return the contents of model.json (``{}`` if it does not exist yet)."""
    p = Path(path) if path else MODEL_JSON
    if not p.exists():
        return {}
    return _read_json(str(p), p.stat().st_mtime)


def model_file(path: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Return the .onnx file a path means and its card: the card's file when no path is
    given; a file outside inference/weights carries its own model.json beside it."""
    card = load_model_json()
    resolved = Path(path) if path else WEIGHTS_DIR / str(card.get("onnx", "oct-lite0-v1.onnx"))
    side = resolved.parent / "model.json"
    if resolved.parent.resolve() != WEIGHTS_DIR.resolve() and side.exists():
        card = load_model_json(side)
    return resolved, card
