from django.apps import AppConfig


class VerificationConfig(AppConfig):
    name = "cases.verification"
    label = "verification"
    verbose_name = "Tiered expert verification"
