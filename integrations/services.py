"""API tokens: create (the secret returned once), revoke one, revoke all of a user."""
from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from octportal.errors import DomainError, NotFound

from .models import ApiToken
from .tokens import secret_hash

SECRET_PREFIX = "oct_"


def token_create(*, user: Any, name: str, scope: str, days: int) -> tuple[ApiToken, str]:
    """A new token of ``user`` valid for ``days``; return it with its secret (never stored)."""
    if not 1 <= days <= settings.OCT_API_TOKEN_MAX_DAYS:
        raise DomainError(
            f"A token lasts 1 to {settings.OCT_API_TOKEN_MAX_DAYS} days.",
            errors={"days": [f"Between 1 and {settings.OCT_API_TOKEN_MAX_DAYS}."]},
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user=user, name=name.strip(), scope=scope, key_hash=secret_hash(secret), prefix=secret[:10],
        expires_at=timezone.now() + timedelta(days=days),
    )
    token.full_clean()
    token.save()
    return token, secret


def token_revoke(*, token_id: int, by: Any) -> ApiToken:
    """Revoke a token: its owner may revoke their own, an admin (staff) any."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(pk=token_id).first()
        if token is None or (token.user_id != by.pk and not by.is_staff):
            raise NotFound("There is no such API token of yours.")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.revoked_by = by
            token.save(update_fields=["revoked_at", "revoked_by"])
    return token


def tokens_revoke_all(*, user: Any) -> int:
    """Revoke every active token of ``user`` ("sign out everywhere")."""
    live = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    count = 0
    for token in live:
        token.revoked_at = timezone.now()
        token.revoked_by = user
        token.save(update_fields=["revoked_at", "revoked_by"])
        count += 1
    return count


def tokens_of(*, user: Any) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user))
