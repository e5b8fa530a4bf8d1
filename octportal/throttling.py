"""API rate limits (DRF throttles; rates in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``).

* ``anon``: per client address (``octportal.security.client_ip``), before sign-in.
* ``user``: per signed-in user, however they authenticate.
* ``token``: per API token, so one leaked or runaway script is slowed on its own.
* scoped (``throttle_scope`` on a view, e.g. ``upload``): per user and scope.
"""
from __future__ import annotations

import hashlib

from rest_framework.authtoken.models import Token
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle, SimpleRateThrottle, UserRateThrottle

from .security import client_ip


class ClientAnonRateThrottle(AnonRateThrottle):
    def get_ident(self, request) -> str:
        return client_ip(request) or "unknown"


class ClientUserRateThrottle(UserRateThrottle):
    def get_ident(self, request) -> str:
        return client_ip(request) or "unknown"


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_cache_key(self, request, view) -> str | None:
        # A digest, not the token: the cache (Redis in production) must not hold credentials.
        # API tokens (integrations.models.ApiToken) carry their own digest as ``throttle_ident``.
        ident = getattr(request.auth, "throttle_ident", None)
        if ident is None and isinstance(request.auth, Token):
            ident = hashlib.sha256(request.auth.key.encode()).hexdigest()[:32]
        if ident is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ClientScopedRateThrottle(ScopedRateThrottle):
    def get_ident(self, request) -> str:
        return client_ip(request) or "unknown"
