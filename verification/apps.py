from django.apps import AppConfig


class VerificationConfig(AppConfig):
    name = "verification"
    label = "verification"
    verbose_name = "Tiered expert verification"

    def ready(self) -> None:
        # Every create and change of grades and reviews (stage, final label) is
        # recorded with who and when; auditlog's LogEntry admin browses them.
        from auditlog.registry import auditlog

        from cases.audit import reverse_relations

        from .models import Grade, ReportVersion, Review

        if not auditlog.contains(Grade):
            auditlog.register(Grade, exclude_fields=reverse_relations(Grade))
        if not auditlog.contains(Review):
            auditlog.register(Review, exclude_fields=reverse_relations(Review))
        if not auditlog.contains(ReportVersion):
            auditlog.register(ReportVersion, exclude_fields=["pdf", *reverse_relations(ReportVersion)])
