from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "cases"
    verbose_name = "Clinical records"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from .models import Case, Patient, Scan, Volume

        # Creates, changes and deletes are logged automatically; views of scan
        # images send auditlog's ``accessed`` signal (cases.views.scan_image).
        auditlog.register(Patient)
        auditlog.register(Case)
        auditlog.register(Scan, exclude_fields=["status_changed_at", "analysis_attempts"])
        auditlog.register(Volume)
