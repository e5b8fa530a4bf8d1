"""Register the shipped ONNX model as a ModelVersion (idempotent) and activate it."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.runtime import load_model
from inference.services import ModelMismatch, model_version_register


class Command(BaseCommand):
    help = "Register inference/weights (or --path) as a model version; activate it unless --no-activate."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--path", default=None, help="The .onnx file (default: the runtime's shipped model).")
        parser.add_argument("--no-activate", action="store_true", help="Register without making it active.")

    def handle(self, *args, path: str | None = None, no_activate: bool = False, **options) -> None:
        try:
            model = load_model(path) if path else load_model()
        except FileNotFoundError as exc:
            raise CommandError(f"model file not found: {exc}") from exc
        file_name = Path(str(path or getattr(model, "path", "") or "")).name
        try:
            row, created = model_version_register(
                name=model.name,
                version=model.version,
                sha256=model.sha256,
                file_name=file_name,
                card=dict(model.card or {}),
                activate=not no_activate,
            )
        except ModelMismatch as exc:
            raise CommandError(exc.message) from exc
        state = "registered" if created else "already registered"
        active = " (active)" if row.is_active else ""
        self.stdout.write(f"{row.label} {state}{active}, sha256 {row.sha256[:12]}")
