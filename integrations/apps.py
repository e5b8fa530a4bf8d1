from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (API tokens, webhooks)"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from octportal.signals import signed_out_everywhere

        from . import schema  # noqa: F401  (the token scheme in the OpenAPI schema)
        from . import tokens
        from .models import ApiToken

        # Creation and revocation are logged as changes; every use as an ACCESS entry (services.token_use).
        auditlog.register(ApiToken, exclude_fields=["last_used_at"], mask_fields=["key_hash"])
        self.tokens = tokens  # reached by authentication.ApiTokenAuthentication
        signed_out_everywhere.connect(_revoke_tokens, dispatch_uid="integrations-revoke-tokens")


def _revoke_tokens(sender, *, user, **kwargs) -> None:
    from .services import tokens_revoke_all

    tokens_revoke_all(user=user)
