from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (API tokens, webhooks)"

    def ready(self) -> None:
        from auditlog.registry import auditlog
        from django.db.models.signals import post_save

        from inference.models import Prediction
        from verification.models import ReportVersion, Review

        from octportal.signals import signed_out_everywhere

        from . import schema  # noqa: F401  (the token scheme in the OpenAPI schema)
        # The Celery task registered in every process (webhooks publishes it by name).
        from . import tasks, tokens, webhooks  # noqa: F401
        from .models import ApiToken

        # Creation and revocation are logged as changes; every use as an ACCESS entry (services.token_use).
        auditlog.register(ApiToken, exclude_fields=["last_used_at"], mask_fields=["key_hash"])
        self.tokens = tokens  # reached by authentication.ApiTokenAuthentication
        signed_out_everywhere.connect(_revoke_tokens, dispatch_uid="integrations-revoke-tokens")
        # Webhook events: post_save of the rows the services write (defined low, connected here).
        post_save.connect(webhooks.on_prediction_saved, sender=Prediction, dispatch_uid="webhook-reading-ready")
        post_save.connect(webhooks.on_review_saved, sender=Review, dispatch_uid="webhook-review-verified")
        post_save.connect(webhooks.on_report_saved, sender=ReportVersion, dispatch_uid="webhook-report-signed")


def _revoke_tokens(sender, *, user, **kwargs) -> None:
    from .services import tokens_revoke_all

    tokens_revoke_all(user=user)
