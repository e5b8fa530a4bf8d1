"""Checking a presented token: find it by the secret's hash, say why it is refused, record each use.

Called by ``authentication.ApiTokenAuthentication`` through the app config (DRF imports
authentication classes while Django is still loading, before models can be imported).
"""
from __future__ import annotations

import hashlib

from auditlog.models import LogEntry
from django.utils import timezone

from octportal.security import client_ip

from .models import ApiToken

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class TokenRefused(Exception):
    """The token does not authenticate (401); ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TokenReadOnly(TokenRefused):
    """A read-only token used for a write (403)."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_authenticate(secret: str) -> ApiToken:
    """The active token of ``secret``, or ``TokenRefused`` saying why."""
    token = ApiToken.objects.select_related("user").filter(key_hash=secret_hash(secret)).first()
    if token is None or not token.user.is_active:
        raise TokenRefused("Invalid API token.")
    if token.is_revoked:
        raise TokenRefused("This API token has been revoked. Create a new one on your account page.")
    if token.is_expired:
        raise TokenRefused(
            f"This API token expired on {token.expires_at:%Y-%m-%d %H:%M} UTC. Create a new one on your account page."
        )
    return token


def token_check_scope(*, token: ApiToken, method: str) -> None:
    if token.read_only and method.upper() not in SAFE_METHODS:
        raise TokenReadOnly("This API token is read-only: it cannot change anything. Use a read-write token.")


def token_use(*, token: ApiToken, request) -> None:
    """Record a use: the last-used time and an audit ACCESS entry (who, what, from where)."""
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
    LogEntry.objects.log_create(
        token, force_log=True, action=LogEntry.Action.ACCESS, actor=token.user, remote_addr=client_ip(request),
        changes={}, additional_data={"method": request.method, "path": request.path[:300]},
    )
