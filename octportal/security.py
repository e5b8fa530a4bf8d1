"""Sign-in and request-origin rules shared by the audit trail, the lockout and the logs.

* ``client_ip``: the address a request came from. ``REMOTE_ADDR`` unless it is one of
  the configured trusted proxies (``OCT_TRUSTED_PROXIES``); then the right-most
  address in ``X-Forwarded-For`` that is not itself a trusted proxy. A client can
  write anything into the left of that header, so nothing left of the first
  untrusted hop is believed.
* ``lockout_response``: what django-axes answers once an account or an address is
  locked out (a page, or ``{"detail": ...}`` JSON under ``/api/`` and for XHR).
* ``user_sessions_end``: "sign out everywhere" (every session and API token of a user).
"""
from __future__ import annotations

import ipaddress
import math
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from rest_framework.authtoken.models import Token

from .signals import signed_out_everywhere

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def trusted_proxies() -> tuple[IPNetwork, ...]:
    """The networks of ``settings.OCT_TRUSTED_PROXIES`` (IPs or CIDRs)."""
    return _networks(tuple(getattr(settings, "OCT_TRUSTED_PROXIES", ()) or ()))


def parse_ip(raw: str) -> IPAddress | None:
    """An address from a header hop (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``), or None."""
    value = raw.strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # IPv4 with a port; bare IPv6 has several colons
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_ip(request: HttpRequest) -> str | None:
    """The client address of ``request`` by the trusted-proxy rule (see the module docstring)."""
    remote_raw = request.META.get("REMOTE_ADDR") or ""
    remote = parse_ip(remote_raw)
    if remote is None:
        return remote_raw or None
    networks = trusted_proxies()
    if not networks or not _trusted(remote, networks):
        return str(remote)
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    candidate = remote
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            # Garbage where a proxy should have written an address: believe the last good hop.
            break
        candidate = address
        if not _trusted(address, networks):
            break
    return str(candidate)


def axes_client_ip(request: HttpRequest) -> str | None:
    """``AXES_CLIENT_IP_CALLABLE``: the lockout counts the same address the audit records."""
    return client_ip(request)


# --- lockout ----------------------------------------------------------------------------


def _cool_off() -> timedelta | None:
    value = getattr(settings, "AXES_COOLOFF_TIME", None)
    if isinstance(value, (int, float)):  # axes reads a number as hours
        return timedelta(hours=value)
    return value if isinstance(value, timedelta) else None


def lockout_message() -> str:
    cool_off = _cool_off()
    head = "Too many failed sign-in attempts for this account or from this address: signing in is locked."
    if cool_off:
        minutes = math.ceil(cool_off.total_seconds() / 60)
        return f"{head} Try again in {minutes} minutes, or ask an administrator to unlock the account."
    return f"{head} Ask an administrator to unlock the account."


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: a clear 429 page, or JSON for the API and scripts."""
    status = getattr(settings, "AXES_HTTP_RESPONSE_CODE", 429)
    cool_off = _cool_off()
    wants_json = (
        request.path.startswith("/api/")
        or request.headers.get("X-Requested-With") == "XMLHttpRequest"
        or "application/json" in request.headers.get("Accept", "")
    )
    if wants_json:
        response: HttpResponse = JsonResponse({"detail": lockout_message()}, status=status)
    else:
        response = render(request, "registration/locked_out.html", {"message": lockout_message()}, status=status)
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response


# --- sign out everywhere ----------------------------------------------------------------


def user_sessions_end(*, user: Any) -> int:
    """End every session of ``user`` (all browsers) and revoke their API token; return the count.

    Sessions are signed blobs keyed by a random id, so finding a user's sessions means
    decoding the unexpired ones; a clinic has hundreds, not millions. Needs the database
    session engine (Django's default, the only one configured here).
    """
    ended = []
    user_pk = str(user.pk)
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get("_auth_user_id")) == user_pk:
            ended.append(session.pk)
    Session.objects.filter(pk__in=ended).delete()
    Token.objects.filter(user=user).delete()
    # Named API tokens live in a higher layer (integrations), which listens.
    signed_out_everywhere.send(sender=user_sessions_end, user=user)
    return len(ended)
