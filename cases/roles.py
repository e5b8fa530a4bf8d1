"""Roles of OCT Portal users, as Django groups, and the checks views use.

Groups and their permissions are created by migration ``cases.0002_roles``.
Superusers count as admins and pass every role check.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest
from rest_framework.permissions import BasePermission


class Role(models.TextChoices):
    CLINICIAN = "clinic_staff", "Clinic staff"
    GRADER_T1 = "grader_tier1", "Grader tier 1 (quality control)"
    GRADER_T2 = "grader_tier2", "Grader tier 2 (ophthalmologist)"
    GRADER_T3 = "grader_tier3", "Grader tier 3 (senior retinal specialist)"
    ADMIN = "admin", "Administrator"


GRADER_ROLES = (Role.GRADER_T1, Role.GRADER_T2, Role.GRADER_T3)
TIER_ROLE = {1: Role.GRADER_T1, 2: Role.GRADER_T2, 3: Role.GRADER_T3}


def user_roles(user: Any) -> frozenset[str]:
    """Return the role names of a user (cached on the user object for the request)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_oct_roles", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached = cached | {Role.ADMIN.value}
        user._oct_roles = cached
    return cached


def has_role(user: Any, *roles: str) -> bool:
    """True if the user holds any of ``roles``; admins hold every role."""
    held = user_roles(user)
    return Role.ADMIN.value in held or any(str(r) in held for r in roles)


def role_required(*roles: str) -> Callable:
    """View decorator: sign-in required, then one of ``roles`` (403 otherwise)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any):
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not give access to this page.")
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorator


class HasRole(BasePermission):
    """DRF permission: set ``allowed_roles`` on the view."""

    message = "Your role does not give access to this resource."

    def has_permission(self, request, view) -> bool:
        roles: Iterable[str] = getattr(view, "allowed_roles", ())
        return bool(request.user and request.user.is_authenticated and has_role(request.user, *roles))


def roles_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``roles`` (a set of names) and ``Role`` for nav decisions."""
    user = getattr(request, "user", None)
    held = user_roles(user) if user is not None else frozenset()
    is_admin = Role.ADMIN.value in held
    return {
        "roles": held,
        "is_clinician": is_admin or Role.CLINICIAN.value in held,
        "is_grader": is_admin or any(r.value in held for r in GRADER_ROLES),
        "is_tier3": is_admin or Role.GRADER_T3.value in held,
        "is_admin": is_admin,
    }
