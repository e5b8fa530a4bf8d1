from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "cases"
    verbose_name = "Clinical records"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from .models import Acknowledgement, Case, Patient, Scan, Volume

        # Creates, changes and deletes are logged automatically; views of scan
        # images send auditlog's ``accessed`` signal (cases.views.scan_image).
        from auditlog.models import LogEntry
        from django.db.models.signals import pre_save

        from .audit import FREE_TEXT_FIELDS, neutral_object_repr, reverse_relations

        mask = {"mask_callable": "cases.audit.redact"}
        auditlog.register(Patient, exclude_fields=reverse_relations(Patient), mask_fields=FREE_TEXT_FIELDS["patient"],
                          **mask)
        auditlog.register(Case, exclude_fields=reverse_relations(Case), mask_fields=FREE_TEXT_FIELDS["case"], **mask)
        auditlog.register(Scan, exclude_fields=["status_changed_at", "analysis_attempts", *reverse_relations(Scan)],
                          mask_fields=FREE_TEXT_FIELDS["scan"], **mask)
        # No identifier or file name in the entries' text (cases.audit).
        pre_save.connect(neutral_object_repr, sender=LogEntry, dispatch_uid="cases-audit-neutral-repr")
        auditlog.register(Acknowledgement, exclude_fields=reverse_relations(Acknowledgement))
        auditlog.register(Volume, exclude_fields=reverse_relations(Volume))
