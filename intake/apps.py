from django.apps import AppConfig


class IntakeConfig(AppConfig):
    """Getting scans in: uploads and data-set imports (no models of its own)."""

    name = "intake"
    verbose_name = "Scan intake"
