"""DRF authentication by API token: ``Authorization: Bearer oct_...``.

Unknown, expired and revoked tokens answer 401 with a detail that says which; a
read-only token answers 403 on a write. Every use is recorded (tokens.token_use).

DRF imports this class while Django loads (``rest_framework.views`` reads the setting),
before models may be imported, so the checks are reached through the app config
(``IntegrationsConfig.tokens`` is the ``tokens`` module once the registry is ready).
"""
from __future__ import annotations

from django.apps import apps
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

KEYWORD = "Bearer"
CHALLENGE = f'{KEYWORD} realm="api"'


class TokenNotAccepted(exceptions.APIException):
    """401 whatever the first authentication class is (DRF turns AuthenticationFailed into
    403 when session authentication, which has no challenge, comes first)."""

    status_code = 401
    default_code = "authentication_failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.auth_header = CHALLENGE


class ApiTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise TokenNotAccepted("Give the token as 'Authorization: Bearer <token>'.")
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise TokenNotAccepted("Invalid API token.") from None
        tokens = apps.get_app_config("integrations").tokens
        try:
            token = tokens.token_authenticate(secret)
        except tokens.TokenRefused as refused:
            raise TokenNotAccepted(refused.message) from None
        tokens.token_use(token=token, request=request)
        try:
            tokens.token_check_scope(token=token, method=request.method)
        except tokens.TokenReadOnly as refused:
            raise exceptions.PermissionDenied(refused.message) from None
        return token.user, token

    def authenticate_header(self, request) -> str:
        return CHALLENGE
